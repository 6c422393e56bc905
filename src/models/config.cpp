#include "models/config.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <set>

#include "core/allocator.h"
#include "core/error.h"

namespace automodel::models {

using nlohmann::json;

void config_error(const std::string& source, const std::string& key, const std::string& what, const std::string& hint) {
  throw Error("config key '" + key + "' " + what, source + ": " + key, hint);
}

namespace {

// Reads v (the value of `key`, shown as `shown` in errors) as T, checking its JSON type.
template <class T>
T json_as(const json& v, const std::string& shown, const std::string& source) {
  auto wrong = [&](const std::string& expected, const std::string& note = "") {
    config_error(source, shown, "must be " + expected + ", got " + v.dump() + note);
  };
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) wrong("true or false");
    return v.get<bool>();
  } else if constexpr (std::is_same_v<T, int64_t>) {
    if (v.is_number_float())
      wrong("an integer", " (a number with a decimal point; transformers refuses it for integer keys too)");
    if (!v.is_number_integer()) wrong("an integer");
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      wrong("an integer below 2^63");
    return v.get<int64_t>();
  } else if constexpr (std::is_same_v<T, double>) {
    if (!v.is_number()) wrong("a number");
    return v.get<double>();
  } else {
    if (!v.is_string()) wrong("a string");
    return v.get<std::string>();
  }
}

template <class T>
T read(const json& j, const std::string& key, const std::string& shown, const T& fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return json_as<T>(*it, shown, source);
}

void warn_once(const std::string& message) {
  static std::mutex mutex;
  static std::set<std::string> shown;
  std::lock_guard<std::mutex> lock(mutex);
  if (shown.insert(message).second) std::fprintf(stderr, "warning: %s\n", message.c_str());
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// A token id key: an integer, or a list of integers (the first is taken) for bos / pad.
std::optional<int64_t> optional_id(const json& j, const std::string& key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_array()) {
    if (it->empty()) return std::nullopt;
    return json_as<int64_t>((*it)[0], key + "[0]", source);
  }
  return json_as<int64_t>(*it, key, source);
}

std::vector<int64_t> id_list(const json& j, const std::string& key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (!it->is_array()) return {json_as<int64_t>(*it, key, source)};
  std::vector<int64_t> ids;
  for (size_t i = 0; i < it->size(); ++i)
    ids.push_back(json_as<int64_t>((*it)[i], key + "[" + std::to_string(i) + "]", source));
  return ids;
}

std::vector<double> double_list(const json& j, const std::string& key, const std::string& shown,
                                const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (!it->is_array()) config_error(source, shown, "must be a list of numbers, got " + it->dump());
  std::vector<double> out;
  for (size_t i = 0; i < it->size(); ++i)
    out.push_back(json_as<double>((*it)[i], shown + "[" + std::to_string(i) + "]", source));
  return out;
}

int64_t positive_int(const json& j, const std::string& key, std::optional<int64_t> fallback,
                     const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (!fallback)
      throw Error("config.json needs a positive '" + key + "' (it is missing)", source + ": " + key,
                  "this is not a complete transformers model config");
    return *fallback;
  }
  const int64_t v = json_as<int64_t>(*it, key, source);
  if (v <= 0) config_error(source, key, "must be a positive integer, got " + std::to_string(v));
  return v;
}

// The mixture-of-experts sizes, when the file names experts (transformers 5 writes num_local_experts for every MoE
// family; Qwen's older files num_experts).
void read_experts(const json& j, ModelConfig& c, const std::string& source) {
  const std::string key =
      j.contains("num_local_experts") && !j["num_local_experts"].is_null() ? "num_local_experts" : "num_experts";
  auto it = j.find(key);
  if (it == j.end() || it->is_null() || (it->is_number_integer() && it->get<int64_t>() == 0)) return;
  c.num_experts = positive_int(j, key, std::nullopt, source);
  c.num_experts_per_tok = positive_int(j, "num_experts_per_tok", std::nullopt, source);
  if (c.num_experts_per_tok > c.num_experts)
    config_error(source, "num_experts_per_tok",
                 "(" + std::to_string(c.num_experts_per_tok) + ") must not exceed " + key + " (" +
                     std::to_string(c.num_experts) + ")",
                 "each token picks that many distinct experts; fix the counts in config.json");
  c.moe_intermediate_size = positive_int(j, "moe_intermediate_size", c.intermediate_size, source);
}

// A number that must be finite and > 0 (or >= 0 with allow_zero).
void require_positive(double v, bool allow_zero, const std::string& source, const std::string& key) {
  if (!std::isfinite(v) || v < 0 || (v == 0 && !allow_zero))
    config_error(
        source, key,
        std::string("must be a ") + (allow_zero ? "non-negative" : "positive") + " finite number, got " + num(v));
}

const char* const kRopeTypes[] = {"default", "linear", "dynamic", "llama3", "longrope", "yarn"};

// One RoPE parameter group `params` (named `group` in errors); keys it lacks come from the top level of j.
RopeConfig parse_rope_group(const json& j, const json& params, const std::string& group, const ModelConfig& c,
                            const std::string& source) {
  auto key = [&](const std::string& k) { return group + "." + k; };
  auto get_d = [&](const std::string& k, double fallback) { return read<double>(params, k, key(k), fallback, source); };
  RopeConfig r;
  r.type = read<std::string>(params, "rope_type", key("rope_type"),
                             read<std::string>(params, "type", key("type"), "default", source), source);
  r.theta = get_d("rope_theta", read<double>(j, "rope_theta", "rope_theta", 10000.0, source));
  r.factor = get_d("factor", 1.0);
  r.partial_rotary_factor =
      get_d("partial_rotary_factor", read<double>(j, "partial_rotary_factor", "partial_rotary_factor", 1.0, source));
  r.low_freq_factor = get_d("low_freq_factor", 1.0);
  r.high_freq_factor = get_d("high_freq_factor", 4.0);
  // Phi-3 keeps the pretraining length at the top level, and it takes priority there.
  r.original_max_position_embeddings =
      read<int64_t>(j, "original_max_position_embeddings", "original_max_position_embeddings",
                    read<int64_t>(params, "original_max_position_embeddings", key("original_max_position_embeddings"),
                                  c.max_position_embeddings, source),
                    source);
  r.short_factor = double_list(params, "short_factor", key("short_factor"), source);
  r.long_factor = double_list(params, "long_factor", key("long_factor"), source);
  if (params.contains("attention_factor") && !params["attention_factor"].is_null())
    r.attention_factor = get_d("attention_factor", 1.0);
  if (r.type == "longrope" && !params.contains("factor")) r.factor = 0;  // derived from the lengths
  if (r.type == "yarn") {
    // transformers: a null or absent factor is max_position_embeddings / original_max_position_embeddings; a
    // beta of 0 (or null) takes its default.
    if (!params.contains("factor") || params["factor"].is_null())
      r.factor = r.original_max_position_embeddings > 0
                     ? double(c.max_position_embeddings) / double(r.original_max_position_embeddings)
                     : 0;
    r.beta_fast = get_d("beta_fast", 32.0);
    r.beta_slow = get_d("beta_slow", 1.0);
    if (r.beta_fast == 0) r.beta_fast = 32.0;
    if (r.beta_slow == 0) r.beta_slow = 1.0;
    r.truncate = read<bool>(params, "truncate", key("truncate"), true, source);
    r.mscale = get_d("mscale", 0.0);
    r.mscale_all_dim = get_d("mscale_all_dim", 0.0);
  }

  // Validation: every value below would otherwise become a NaN or infinite frequency, or a crash.
  if (std::find(std::begin(kRopeTypes), std::end(kRopeTypes), r.type) == std::end(kRopeTypes))
    config_error(source, key("rope_type"), "'" + r.type + "' is not supported",
                 "supported rope types: default, linear, dynamic, llama3, longrope, yarn");
  require_positive(r.theta, false, source, params.contains("rope_theta") ? key("rope_theta") : "rope_theta");
  if (!(r.partial_rotary_factor > 0 && r.partial_rotary_factor <= 1))
    config_error(source,
                 params.contains("partial_rotary_factor") ? key("partial_rotary_factor") : "partial_rotary_factor",
                 "must be in (0, 1], got " + num(r.partial_rotary_factor));
  const int64_t rotary = int64_t(double(c.head_dim) * r.partial_rotary_factor);
  if (rotary <= 0 || rotary % 2 != 0)
    config_error(source, "head_dim",
                 "gives a rotary dimension of " + std::to_string(rotary) + " (head_dim " + std::to_string(c.head_dim) +
                     " x partial_rotary_factor " + num(r.partial_rotary_factor) + "); RoPE needs it even and positive",
                 "fix head_dim (or hidden_size / num_attention_heads) or partial_rotary_factor");
  const bool uses_original = r.type == "llama3" || r.type == "longrope" || r.type == "yarn";
  if (uses_original && r.original_max_position_embeddings <= 0)
    config_error(source, "original_max_position_embeddings",
                 "must be a positive integer, got " + std::to_string(r.original_max_position_embeddings));
  if (r.type == "linear" || r.type == "dynamic" || r.type == "llama3" || r.type == "yarn" ||
      (r.type == "longrope" && params.contains("factor")))
    require_positive(r.factor, false, source, key("factor"));
  if (r.type == "dynamic" && rotary <= 2)
    config_error(source, "head_dim",
                 "gives a rotary dimension of " + std::to_string(rotary) + "; dynamic RoPE needs more than 2");
  if (r.type == "llama3") {
    require_positive(r.low_freq_factor, false, source, key("low_freq_factor"));
    require_positive(r.high_freq_factor, false, source, key("high_freq_factor"));
    if (!(r.high_freq_factor > r.low_freq_factor))
      config_error(
          source, key("high_freq_factor"),
          "must be greater than low_freq_factor (" + num(r.low_freq_factor) + "), got " + num(r.high_freq_factor));
  }
  if (r.type == "longrope") {
    for (auto [name, list] : {std::pair{"short_factor", &r.short_factor}, std::pair{"long_factor", &r.long_factor}}) {
      if (int64_t(list->size()) != rotary / 2)
        config_error(source, key(name),
                     "has " + std::to_string(list->size()) + " entries; longrope needs rotary_dim / 2 = " +
                         std::to_string(rotary / 2) + " (head_dim " + std::to_string(c.head_dim) +
                         " x partial_rotary_factor " + num(r.partial_rotary_factor) + " / 2)");
      for (size_t i = 0; i < list->size(); ++i)
        require_positive((*list)[i], false, source, key(name) + "[" + std::to_string(i) + "]");
    }
  }
  if (r.attention_factor) require_positive(*r.attention_factor, false, source, key("attention_factor"));
  if (r.type == "yarn") {
    require_positive(r.beta_fast, false, source, key("beta_fast"));
    require_positive(r.beta_slow, false, source, key("beta_slow"));
    require_positive(r.mscale, true, source, key("mscale"));
    require_positive(r.mscale_all_dim, true, source, key("mscale_all_dim"));
  }
  return r;
}

// Whether `rope_parameters` holds one group per layer type (transformers 5's Gemma 3: "full_attention" and
// "sliding_attention").
bool rope_per_layer_type(const json& j) {
  auto it = j.find("rope_parameters");
  if (it == j.end() || !it->is_object()) return false;
  return it->contains("full_attention") || it->contains("sliding_attention");
}

// The layer-type group `type` of a per-layer-type `rope_parameters` (absent or null: all defaults).
json rope_type_group(const json& j, const std::string& type, const std::string& source) {
  const json& all = j["rope_parameters"];
  auto it = all.find(type);
  if (it == all.end() || it->is_null()) return json::object();
  if (!it->is_object()) config_error(source, "rope_parameters." + type, "must be an object, got " + it->dump());
  return *it;
}

void parse_rope(const json& j, ModelConfig& c, const std::string& source) {
  if (rope_per_layer_type(j)) {
    c.rope =
        parse_rope_group(j, rope_type_group(j, "full_attention", source), "rope_parameters.full_attention", c, source);
    if (j["rope_parameters"].contains("sliding_attention"))
      c.sliding_rope = parse_rope_group(j, rope_type_group(j, "sliding_attention", source),
                                        "rope_parameters.sliding_attention", c, source);
    return;
  }
  // transformers 5 writes `rope_parameters`; older files have `rope_theta` and `rope_scaling`.
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object())
    c.rope = parse_rope_group(j, j["rope_parameters"], "rope_parameters", c, source);
  else if (j.contains("rope_scaling") && j["rope_scaling"].is_object())
    c.rope = parse_rope_group(j, j["rope_scaling"], "rope_scaling", c, source);
  else
    c.rope = parse_rope_group(j, json::object(), "rope_parameters", c, source);
}

// Token ids outside the vocabulary: transformers warns (validate_token_ids: "several configs on the Hub store
// invalid special tokens, e.g. pad_token_id=-1"), and its nn.Embedding(padding_idx) refuses a pad_token_id
// outside [-vocab_size, vocab_size).
void check_token_ids(const ModelConfig& c, const std::string& source) {
  const std::string range = "[0, " + std::to_string(c.vocab_size) + ")";
  if (c.pad_token_id) {
    const int64_t pad = *c.pad_token_id;
    if (pad >= c.vocab_size || pad < -c.vocab_size)
      config_error(source, "pad_token_id",
                   "is " + std::to_string(pad) + ", outside the vocabulary " + range + " (vocab_size " +
                       std::to_string(c.vocab_size) + ")",
                   "set pad_token_id to an id below vocab_size, or to null (transformers' nn.Embedding refuses it "
                   "as padding_idx too)");
    if (pad < 0)
      warn_once(source + ": pad_token_id " + std::to_string(pad) + " is outside the vocabulary " + range +
                "; no embedding row is treated as padding");
  }
  auto warn_outside = [&](const char* key, int64_t id) {
    if (id < 0 || id >= c.vocab_size)
      warn_once(source + ": " + key + " " + std::to_string(id) + " is outside the vocabulary " + range +
                " (transformers warns too); the model can never produce or read it");
  };
  if (c.bos_token_id) warn_outside("bos_token_id", *c.bos_token_id);
  for (int64_t id : c.eos_token_ids) warn_outside("eos_token_id", id);
}

// The parameter tensors the config's sizes imply, grouped, with the keys each group grows with.
struct SizePart {
  std::string name;
  std::vector<std::pair<const char*, int64_t>> keys;
  uint64_t count = 0;
  // The key with the largest value: the one that makes this part large.
  std::pair<const char*, int64_t> culprit() const {
    return *std::max_element(keys.begin(), keys.end(), [](auto& a, auto& b) { return a.second < b.second; });
  }
};

std::string describe_keys(const SizePart& p) {
  std::string s;
  for (auto& [k, v] : p.keys) s += (s.empty() ? "" : " x ") + std::string(k) + " " + std::to_string(v);
  return s;
}

[[noreturn]] void overflow(const ModelConfig& c, const SizePart& p) {
  auto [key, value] = p.culprit();
  config_error(c.source, key,
               "is " + std::to_string(value) + ": the size of " + p.name + " (" + describe_keys(p) +
                   ") overflows 64-bit arithmetic",
               std::string(key) + " is out of any real model's range; fix it in config.json");
}

std::vector<SizePart> size_parts(const ModelConfig& c) {
  const uint64_t V = uint64_t(c.vocab_size), E = uint64_t(c.hidden_size), I = uint64_t(c.intermediate_size),
                 L = uint64_t(c.num_hidden_layers), H = uint64_t(c.num_attention_heads),
                 KV = uint64_t(c.num_key_value_heads), D = uint64_t(c.head_dim);
  bool ok = true;
  auto mul = [&](std::initializer_list<uint64_t> xs) {
    uint64_t r = 1;
    for (uint64_t x : xs) ok = ok && !__builtin_mul_overflow(r, x, &r);
    return r;
  };
  auto add = [&](std::initializer_list<uint64_t> xs) {
    uint64_t r = 0;
    for (uint64_t x : xs) ok = ok && !__builtin_add_overflow(r, x, &r);
    return r;
  };
  std::vector<SizePart> parts;
  auto finish = [&](SizePart p) {
    if (!ok || p.count > uint64_t(std::numeric_limits<int64_t>::max())) overflow(c, p);
    parts.push_back(std::move(p));
  };
  ok = true;
  SizePart embed{"model.embed_tokens.weight", {{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size}}};
  embed.count = mul({V, E});
  finish(embed);
  if (!c.tie_word_embeddings) {
    SizePart head = embed;
    head.name = "lm_head.weight";
    finish(head);
  }
  // Per layer: q, k, v, o, gate, up, down, and the small vectors (biases, norms) at their largest.
  SizePart layers{"the decoder layers",
                  {{"num_hidden_layers", c.num_hidden_layers},
                   {"hidden_size", c.hidden_size},
                   {"intermediate_size", c.intermediate_size},
                   {"num_attention_heads", c.num_attention_heads},
                   {"num_key_value_heads", c.num_key_value_heads},
                   {"head_dim", c.head_dim}}};
  ok = true;
  const uint64_t qkvo = add({mul({E, H, D}), mul({2, E, KV, D}), mul({H, D, E})});
  const uint64_t vectors = add({mul({add({H, mul({2, KV})}), D}), mul({6, E}), mul({2, D}), mul({2, I})});
  layers.count = mul({L, add({qkvo, mul({3, E, I}), vectors})});
  finish(layers);
  if (c.num_experts > 0) {  // as if every layer had experts (router + gate, up and down per expert)
    SizePart experts{"the experts",
                     {{"num_hidden_layers", c.num_hidden_layers},
                      {"num_local_experts", c.num_experts},
                      {"hidden_size", c.hidden_size},
                      {"moe_intermediate_size", c.moe_intermediate_size}}};
    ok = true;
    const uint64_t X = uint64_t(c.num_experts), MI = uint64_t(c.moe_intermediate_size);
    experts.count = mul({L, X, add({mul({3, E, MI}), E})});
    finish(experts);
  }
  return parts;
}

}  // namespace

template <class T>
T json_get(const json& j, const std::string& key, const T& fallback, const std::string& source) {
  return read<T>(j, key, key, fallback, source);
}
template bool json_get(const json&, const std::string&, const bool&, const std::string&);
template int64_t json_get(const json&, const std::string&, const int64_t&, const std::string&);
template double json_get(const json&, const std::string&, const double&, const std::string&);
template std::string json_get(const json&, const std::string&, const std::string&, const std::string&);

int64_t parameter_count_bound(const ModelConfig& c) {
  uint64_t total = uint64_t(c.hidden_size);  // the final norm
  std::vector<SizePart> parts = size_parts(c);
  for (const SizePart& p : parts)
    if (__builtin_add_overflow(total, p.count, &total) || total > uint64_t(std::numeric_limits<int64_t>::max()))
      overflow(c, p);
  return int64_t(total);
}

void check_parameters_fit_in_memory(const ModelConfig& c, size_t bytes_per_parameter, const std::string& dtype) {
  const uint64_t count = uint64_t(parameter_count_bound(c));
  std::vector<SizePart> parts = size_parts(c);
  const SizePart& largest =
      *std::max_element(parts.begin(), parts.end(), [](auto& a, auto& b) { return a.count < b.count; });
  uint64_t bytes = 0;
  const bool wraps = __builtin_mul_overflow(count, uint64_t(bytes_per_parameter), &bytes);
  const size_t physical = physical_memory_bytes();
  if (!wraps && bytes <= physical) return;
  auto [key, value] = largest.culprit();
  const std::string need = wraps ? "more than 2^64 bytes" : byte_count(bytes);
  config_error(c.source, key,
               "is " + std::to_string(value) + ": the model's " + std::to_string(count) + " parameters need " + need +
                   " in " + dtype + ", more than this machine's physical memory (" + byte_count(physical) +
                   "); the largest part is " + largest.name + " (" + describe_keys(largest) + ")",
               "check " + std::string(key) + " in config.json: a model this size cannot be loaded on this machine");
}

ModelConfig ModelConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error("config.json is not a JSON object", source);
  ModelConfig c;
  c.raw = j;
  c.source = source;
  c.model_type = json_get<std::string>(j, "model_type", "", source);
  if (c.model_type.empty())
    throw Error("config.json has no model_type", source, "this is not a transformers model config");
  c.vocab_size = positive_int(j, "vocab_size", std::nullopt, source);
  c.hidden_size = positive_int(j, "hidden_size", std::nullopt, source);
  c.intermediate_size = positive_int(j, "intermediate_size", std::nullopt, source);
  c.num_hidden_layers = positive_int(j, "num_hidden_layers", std::nullopt, source);
  c.num_attention_heads = positive_int(j, "num_attention_heads", std::nullopt, source);
  c.num_key_value_heads = positive_int(j, "num_key_value_heads", c.num_attention_heads, source);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    config_error(source, "num_key_value_heads",
                 "must divide num_attention_heads: num_attention_heads (" + std::to_string(c.num_attention_heads) +
                     ") is not a multiple of num_key_value_heads (" + std::to_string(c.num_key_value_heads) + ")",
                 "each key/value head serves a whole group of query heads; fix the head counts in config.json");
  const bool explicit_head_dim = j.contains("head_dim") && !j["head_dim"].is_null();
  if (!explicit_head_dim && c.hidden_size % c.num_attention_heads != 0)
    config_error(source, "hidden_size",
                 "(" + std::to_string(c.hidden_size) + ") is not a multiple of num_attention_heads (" +
                     std::to_string(c.num_attention_heads) + ") and there is no head_dim",
                 "set head_dim, or fix hidden_size / num_attention_heads");
  c.head_dim = positive_int(j, "head_dim", c.hidden_size / c.num_attention_heads, source);
  c.max_position_embeddings = positive_int(j, "max_position_embeddings", 2048, source);
  c.rms_norm_eps = json_get<double>(j, "rms_norm_eps", 1e-6, source);
  require_positive(c.rms_norm_eps, false, source, "rms_norm_eps");
  c.hidden_act = json_get<std::string>(j, "hidden_act", "silu", source);
  c.tie_word_embeddings = json_get<bool>(j, "tie_word_embeddings", false, source);
  c.attention_bias = json_get<bool>(j, "attention_bias", false, source);
  c.mlp_bias = json_get<bool>(j, "mlp_bias", false, source);
  c.pad_token_id = optional_id(j, "pad_token_id", source);
  c.bos_token_id = optional_id(j, "bos_token_id", source);
  c.eos_token_ids = id_list(j, "eos_token_id", source);
  c.attn_logit_softcapping = json_get<double>(j, "attn_logit_softcapping", 0.0, source);
  c.final_logit_softcapping = json_get<double>(j, "final_logit_softcapping", 0.0, source);
  c.query_pre_attn_scalar = json_get<double>(j, "query_pre_attn_scalar", 0.0, source);
  for (auto [key, v] : {std::pair{"attn_logit_softcapping", c.attn_logit_softcapping},
                        std::pair{"final_logit_softcapping", c.final_logit_softcapping},
                        std::pair{"query_pre_attn_scalar", c.query_pre_attn_scalar}})
    require_positive(v, true, source, key);
  read_experts(j, c, source);
  c.dtype = json_get<std::string>(j, "dtype", json_get<std::string>(j, "torch_dtype", "float32", source), source);
  parse_rope(j, c, source);
  check_token_ids(c, source);
  // Before anything is sized from these numbers: bf16 (2 bytes) is the least a model loads in.
  check_parameters_fit_in_memory(c, 2, "bfloat16 (the least any load needs)");
  c.layer_windows.assign(size_t(c.num_hidden_layers), 0);
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
