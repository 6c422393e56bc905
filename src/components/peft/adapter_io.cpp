#include "components/peft/adapter_io.h"

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "components/peft/lora.h"
#include "core/error.h"
#include "io/hf_dir.h"
#include "io/safetensors.h"
#include "ops/cast.h"
#include "ops/view.h"

namespace automodel::peft {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

const std::string kPrefix = "base_model.model.";
const std::string kConfigFile = "adapter_config.json", kWeightsFile = "adapter_model.safetensors";

std::string leaf(const std::string& name) {
  size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

std::string regex_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (std::string("\\^$.|?*+()[]{}").find(ch) != std::string::npos) out += '\\';
    out += ch;
  }
  return out;
}

// peft's target_modules for exactly the adapted layers: their leaf names (peft matches a list entry
// against the name's last components) when no other linear layer shares one of them, else a regex
// that fullmatches each adapted name.
json target_modules_json(models::CausalLM& model, const std::vector<std::string>& adapted) {
  std::set<std::string> adapted_set(adapted.begin(), adapted.end()), leaves;
  for (const auto& n : adapted) leaves.insert(leaf(n));
  bool leaves_exact = true;
  for (auto& [name, m] : model.named_modules())
    if (dynamic_cast<nn::Linear*>(m) && leaves.count(leaf(name)) && !adapted_set.count(name)) leaves_exact = false;
  if (leaves_exact) return json(std::vector<std::string>(leaves.begin(), leaves.end()));
  std::string re;
  for (const auto& n : adapted) re += (re.empty() ? "" : "|") + regex_escape(n);
  return json("(" + re + ")");
}

json number(double v) { return v == std::floor(v) && std::abs(v) < 1e15 ? json(int64_t(v)) : json(v); }

// peft's get_pattern_key: the first pattern key k with name matching (.*\.)?(k)$.
const json* pattern_value(const json& patterns, const std::string& name) {
  if (!patterns.is_object()) return nullptr;
  for (auto it = patterns.begin(); it != patterns.end(); ++it)
    if (std::regex_match(name, std::regex("(.*\\.)?(" + it.key() + ")"))) return &it.value();
  return nullptr;
}

}  // namespace

std::string adapter_tensor_name(const std::string& parameter_name) { return kPrefix + parameter_name; }

void save_adapter(models::CausalLM& model, const std::string& dir, const PeftConfig& config,
                  const std::string& base_model_name_or_path) {
  auto modules = lora_modules(model);
  if (modules.empty())
    throw Error("save_adapter: the model has no LoRA adapter", dir, "call apply_lora or load_adapter first");
  io::NamedTensors tensors;
  std::vector<std::string> names;
  for (auto& [name, lin] : modules) {
    tensors.emplace_back(adapter_tensor_name(name + ".lora_A.weight"), lin->lora_A().detach());
    tensors.emplace_back(adapter_tensor_name(name + ".lora_B.weight"), lin->lora_B().detach());
    names.push_back(name);
  }
  json c = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"r", config.dim},
      {"lora_alpha", number(config.alpha)},
      {"lora_dropout", config.dropout},
      {"use_rslora", config.use_rslora},
      {"target_modules", target_modules_json(model, names)},
      {"exclude_modules", nullptr},
      {"base_model_name_or_path", base_model_name_or_path.empty() ? json(nullptr) : json(base_model_name_or_path)},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"lora_bias", false},
      {"use_dora", false},
      {"modules_to_save", nullptr},
      {"rank_pattern", json::object()},
      {"alpha_pattern", json::object()},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"layer_replication", nullptr},
      {"loftq_config", json::object()},
      {"megatron_config", nullptr},
      {"megatron_core", "megatron.core"},
      {"auto_mapping", nullptr},
      {"revision", nullptr},
  };
  // Every adapter must share the config's rank for `r` to describe it; otherwise record the rest.
  for (auto& [name, lin] : modules)
    if (lin->lora_A().size(0) != config.dim) c["rank_pattern"]["^" + regex_escape(name) + "$"] = lin->lora_A().size(0);
  fs::create_directories(dir);
  io::save_safetensors((fs::path(dir) / kWeightsFile).string(), tensors);
  io::write_file_atomic((fs::path(dir) / kConfigFile).string(), c.dump(2) + "\n");
}

LoadedAdapter load_adapter(models::CausalLM& model, const std::string& dir, std::optional<DType> dtype,
                           bool trainable) {
  const std::string config_path = (fs::path(dir) / kConfigFile).string();
  const std::string weights_path = (fs::path(dir) / kWeightsFile).string();
  if (!fs::exists(config_path))
    throw Error("no " + kConfigFile + " in '" + dir + "'", dir, "pass a directory written by peft's save_pretrained");
  if (!fs::exists(weights_path))
    throw Error("no " + kWeightsFile + " in '" + dir + "'", dir,
                fs::exists(fs::path(dir) / "adapter_model.bin")
                    ? "adapter_model.bin (pickle) is not read; save it again with safe_serialization=True"
                    : "pass a directory written by peft's save_pretrained");
  const json c = io::read_json_file(config_path);
  auto get = [&](const char* key, const json& fallback) {
    return c.contains(key) && !c[key].is_null() ? c[key] : fallback;
  };
  auto unsupported = [&](const std::string& what, const std::string& hint) {
    throw Error("adapter: " + what + " is not supported", config_path, hint);
  };
  if (get("peft_type", "") != "LORA") unsupported("peft_type " + get("peft_type", "null").dump(), "use a LoRA adapter");
  if (get("use_dora", false).get<bool>()) unsupported("DoRA (use_dora: true)", "train a plain LoRA adapter");
  if (get("lora_bias", false).get<bool>()) unsupported("lora_bias: true", "train without lora_bias");
  if (get("fan_in_fan_out", false).get<bool>()) unsupported("fan_in_fan_out: true", "Conv1D bases are not supported");
  if (get("bias", "none") != "none") unsupported("bias " + get("bias", "").dump(), "train with bias: none");
  if (!get("modules_to_save", json::array()).empty())
    unsupported("modules_to_save", "train adapters only, without fully trained modules");
  if (!get("layer_replication", json::array()).empty()) unsupported("layer_replication", "");
  if (!get("trainable_token_indices", json::object()).empty()) unsupported("trainable_token_indices", "");

  LoadedAdapter out;
  out.base_model_name_or_path = get("base_model_name_or_path", "").get<std::string>();
  PeftConfig& pc = out.config;
  const int64_t r = get("r", 8).get<int64_t>();
  pc.dim = r;
  pc.alpha = get("lora_alpha", 8).get<double>();
  pc.dropout = get("lora_dropout", 0.0).get<double>();
  pc.dropout_position = "pre";
  pc.use_rslora = get("use_rslora", false).get<bool>();
  const json rank_pattern = get("rank_pattern", json::object()), alpha_pattern = get("alpha_pattern", json::object());

  io::SafetensorsReader reader(weights_path);
  // module -> (A, B) from peft's names.
  std::map<std::string, std::pair<std::string, std::string>> found;
  for (const std::string& key : reader.names()) {
    std::string name = key.rfind(kPrefix, 0) == 0 ? key.substr(kPrefix.size()) : key;
    auto strip = [&](const std::string& suffix) {
      if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
        return false;
      name.resize(name.size() - suffix.size());
      return true;
    };
    if (strip(".lora_A.weight")) {
      found[name].first = key;
    } else if (strip(".lora_B.weight")) {
      found[name].second = key;
    } else {
      throw Error("adapter tensor '" + key + "' is not a LoRA A/B weight", weights_path,
                  "only lora_A / lora_B weights of linear layers are supported (no embeddings, DoRA or biases)");
    }
  }
  if (found.empty()) throw Error("adapter holds no tensors", weights_path);

  std::map<std::string, nn::Linear*> linears;
  for (auto& [name, m] : model.named_modules())
    if (auto* lin = dynamic_cast<nn::Linear*>(m)) linears[name] = lin;
  struct Pending {
    nn::Linear* lin;
    Tensor a, b;
    double scale;
  };
  std::map<std::string, Pending> pending;
  for (const auto& [name, keys] : found) {
    if (keys.first.empty() || keys.second.empty())
      throw Error("adapter for '" + name + "' has only one of lora_A / lora_B", weights_path);
    auto it = linears.find(name);
    if (it == linears.end())
      throw Error("adapter module '" + name + "' is not a linear layer of this model", weights_path,
                  "load the adapter onto the base model it was trained on (adapter_config.json: "
                  "base_model_name_or_path " +
                      get("base_model_name_or_path", "null").dump() + ")");
    if (name == "lm_head")
      throw Error("adapter on 'lm_head' is not supported (the LM head's product bypasses nn::Linear)", weights_path);
    Tensor a = reader.get(keys.first), b = reader.get(keys.second);
    nn::Linear* lin = it->second;
    if (a.dim() != 2 || b.dim() != 2 || a.size(1) != lin->in_features() || b.size(0) != lin->out_features() ||
        b.size(1) != a.size(0))
      throw Error("adapter for '" + name + "': lora_A " + a.describe() + " and lora_B " + b.describe() +
                      " do not fit weight " + lin->weight.describe(),
                  weights_path, "expected lora_A [r, in] and lora_B [out, r]");
    const int64_t rank = a.size(0);
    const json* rp = pattern_value(rank_pattern, name);
    const int64_t want = rp ? rp->get<int64_t>() : r;
    if (rank != want)
      throw Error("adapter for '" + name + "' has rank " + std::to_string(rank) + " but the config says " +
                      std::to_string(want),
                  config_path);
    const json* ap = pattern_value(alpha_pattern, name);
    const double alpha = ap ? ap->get<double>() : pc.alpha;
    const double scale = pc.use_rslora ? alpha / std::sqrt(double(rank)) : alpha / double(rank);
    const DType dt = dtype.value_or(a.dtype());
    pending[name] = {lin, ops::clone(io::convert_dtype(a, dt)), ops::clone(io::convert_dtype(b, dt)), scale};
  }
  model.set_requires_grad(false);
  nn::LoraSettings s;
  s.dropout = pc.dropout;
  s.dropout_position = ops::LoraDropoutPosition::pre;
  for (auto& [name, m] : model.named_modules()) {  // model order
    auto it = pending.find(name);
    if (it == pending.end()) continue;
    s.scale = it->second.scale;
    it->second.lin->attach_lora(it->second.a, it->second.b, s);
    if (!trainable) {
      it->second.lin->lora_A().set_requires_grad(false);
      it->second.lin->lora_B().set_requires_grad(false);
    }
    out.modules.push_back(name);
    pc.target_modules.push_back(name);
  }
  return out;
}

}  // namespace automodel::peft
