#include "models/config.h"

#include "core/error.h"

namespace automodel::models {

using nlohmann::json;

template <class T>
T json_get(const json& j, const std::string& key, const T& fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    throw Error("config key '" + key + "' has the wrong type: " + it->dump(), source, "fix the value in config.json");
  }
}
template bool json_get(const json&, const std::string&, const bool&, const std::string&);
template int64_t json_get(const json&, const std::string&, const int64_t&, const std::string&);
template double json_get(const json&, const std::string&, const double&, const std::string&);
template std::string json_get(const json&, const std::string&, const std::string&, const std::string&);

namespace {

std::optional<int64_t> optional_id(const json& j, const std::string& key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_array()) {
    if (it->empty()) return std::nullopt;
    return (*it)[0].get<int64_t>();
  }
  AM_CHECK(it->is_number_integer(), "config key '", key, "' must be an integer in ", source);
  return it->get<int64_t>();
}

std::vector<double> double_list(const json& j, const std::string& key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (!it->is_array()) throw Error("config key '" + key + "' must be a list of numbers", source);
  std::vector<double> out;
  for (const json& v : *it) out.push_back(v.get<double>());
  return out;
}

RopeConfig parse_rope(const json& j, const ModelConfig& c, const std::string& source) {
  // transformers 5 writes `rope_parameters`; older files have `rope_theta` and `rope_scaling`.
  json params = json::object();
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object())
    params = j["rope_parameters"];
  else if (j.contains("rope_scaling") && j["rope_scaling"].is_object())
    params = j["rope_scaling"];
  RopeConfig r;
  r.type = json_get<std::string>(params, "rope_type", json_get<std::string>(params, "type", "default", source), source);
  r.theta = json_get<double>(params, "rope_theta", json_get<double>(j, "rope_theta", 10000.0, source), source);
  r.factor = json_get<double>(params, "factor", 1.0, source);
  r.partial_rotary_factor = json_get<double>(params, "partial_rotary_factor",
                                             json_get<double>(j, "partial_rotary_factor", 1.0, source), source);
  r.low_freq_factor = json_get<double>(params, "low_freq_factor", 1.0, source);
  r.high_freq_factor = json_get<double>(params, "high_freq_factor", 4.0, source);
  // Phi-3 keeps the pretraining length at the top level, and it takes priority there.
  r.original_max_position_embeddings = json_get<int64_t>(
      j, "original_max_position_embeddings",
      json_get<int64_t>(params, "original_max_position_embeddings", c.max_position_embeddings, source), source);
  r.short_factor = double_list(params, "short_factor", source);
  r.long_factor = double_list(params, "long_factor", source);
  if (params.contains("attention_factor") && !params["attention_factor"].is_null())
    r.attention_factor = params["attention_factor"].get<double>();
  if (r.type == "longrope" && !params.contains("factor")) r.factor = 0;  // derived from the lengths
  return r;
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error("config.json is not a JSON object", source);
  ModelConfig c;
  c.raw = j;
  c.model_type = json_get<std::string>(j, "model_type", "", source);
  if (c.model_type.empty())
    throw Error("config.json has no model_type", source, "this is not a transformers model config");
  auto required = [&](const char* key) {
    int64_t v = json_get<int64_t>(j, key, -1, source);
    if (v <= 0) throw Error(std::string("config.json needs a positive '") + key + "'", source);
    return v;
  };
  c.vocab_size = required("vocab_size");
  c.hidden_size = required("hidden_size");
  c.intermediate_size = required("intermediate_size");
  c.num_hidden_layers = required("num_hidden_layers");
  c.num_attention_heads = required("num_attention_heads");
  c.num_key_value_heads = json_get<int64_t>(j, "num_key_value_heads", c.num_attention_heads, source);
  c.head_dim = json_get<int64_t>(j, "head_dim", c.hidden_size / c.num_attention_heads, source);
  c.max_position_embeddings = json_get<int64_t>(j, "max_position_embeddings", 2048, source);
  c.rms_norm_eps = json_get<double>(j, "rms_norm_eps", 1e-6, source);
  c.hidden_act = json_get<std::string>(j, "hidden_act", "silu", source);
  c.tie_word_embeddings = json_get<bool>(j, "tie_word_embeddings", false, source);
  c.attention_bias = json_get<bool>(j, "attention_bias", false, source);
  c.mlp_bias = json_get<bool>(j, "mlp_bias", false, source);
  c.pad_token_id = optional_id(j, "pad_token_id", source);
  c.bos_token_id = optional_id(j, "bos_token_id", source);
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array()) {
    for (const json& v : j["eos_token_id"]) c.eos_token_ids.push_back(v.get<int64_t>());
  } else if (auto eos = optional_id(j, "eos_token_id", source)) {
    c.eos_token_ids.push_back(*eos);
  }
  c.attn_logit_softcapping = json_get<double>(j, "attn_logit_softcapping", 0.0, source);
  c.final_logit_softcapping = json_get<double>(j, "final_logit_softcapping", 0.0, source);
  c.query_pre_attn_scalar = json_get<double>(j, "query_pre_attn_scalar", 0.0, source);
  c.dtype = json_get<std::string>(j, "dtype", json_get<std::string>(j, "torch_dtype", "float32", source), source);
  c.rope = parse_rope(j, c, source);
  c.layer_windows.assign(size_t(c.num_hidden_layers), 0);

  AM_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, "num_attention_heads (", c.num_attention_heads,
           ") is not a multiple of num_key_value_heads (", c.num_key_value_heads, ") in ", source);
  return c;
}

json ModelConfig::to_json() const {
  json j = raw;
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["dtype"] = dtype;
  j.erase("torch_dtype");
  return j;
}

}  // namespace automodel::models
