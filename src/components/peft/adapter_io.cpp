#include "components/peft/adapter_io.h"

#include <algorithm>
#include <climits>
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
// that fullmatches each adapted layer's module path.
json target_modules_json(models::LanguageModel& model, const std::vector<std::string>& adapted) {
  std::set<std::string> adapted_set(adapted.begin(), adapted.end()), leaves;
  for (const auto& n : adapted) leaves.insert(leaf(n));
  bool leaves_exact = true;
  for (auto& [name, m] : model.named_modules())
    if (dynamic_cast<nn::Linear*>(m) && leaves.count(leaf(name)) && !adapted_set.count(name)) leaves_exact = false;
  if (leaves_exact) return json(std::vector<std::string>(leaves.begin(), leaves.end()));
  std::string re;
  for (const auto& n : adapted) re += (re.empty() ? "" : "|") + regex_escape(model.module_name(n));
  return json("(" + re + ")");
}

json number(double v) { return v == std::floor(v) && std::abs(v) < 1e15 ? json(int64_t(v)) : json(v); }

using models::ExpertProjection;

std::string expert_parameter_name(ExpertProjection p) {
  return p == ExpertProjection::gate_up ? "gate_up_proj" : "down_proj";
}

// peft's get_pattern_key: the first pattern key k with name matching (.*\.)?(k)$ ("" when none does). The keys
// were checked to be valid regular expressions when the file was read.
std::string pattern_key(const json& patterns, const std::string& name) {
  for (auto it = patterns.begin(); it != patterns.end(); ++it)
    if (std::regex_match(name, std::regex("(.*\\.)?(" + it.key() + ")"))) return it.key();
  return "";
}

// adapter_config.json with every value we use read with its JSON type checked: a wrong type is an Error naming
// the key, the file and the type expected, never a raw JSON library message.
class AdapterConfigFile {
 public:
  explicit AdapterConfigFile(const std::string& path) : path_(path) {
    try {
      json_ = io::read_json_file(path);
    } catch (const json::exception& e) {  // numbers beyond a double (1e999)
      throw Error("invalid JSON in " + path + ": " + e.what(), path, "fix the value there");
    }
    if (!json_.is_object())
      throw Error(kConfigFile + " is a JSON " + json_.type_name() + ", not an object", path,
                  "pass a directory written by peft's save_pretrained");
  }

  // The value of `key`; nullptr when absent or null.
  const json* json_of(const std::string& key) const {
    auto it = json_.find(key);
    return it == json_.end() || it->is_null() ? nullptr : &*it;
  }

  [[noreturn]] void wrong(const std::string& key, const std::string& expected, const json& v) const {
    throw Error(kConfigFile + ": '" + key + "' must be " + expected + ", got " + v.dump(), path_ + ": " + key,
                "fix the value (peft's save_pretrained writes it as " + expected + ")");
  }

  std::string string(const std::string& key, const std::string& fallback) const {
    const json* v = json_of(key);
    if (!v) return fallback;
    if (!v->is_string()) wrong(key, "a string", *v);
    return v->get<std::string>();
  }
  bool boolean(const std::string& key, bool fallback) const {
    const json* v = json_of(key);
    if (!v) return fallback;
    if (!v->is_boolean()) wrong(key, "true or false", *v);
    return v->get<bool>();
  }
  // A finite number (integer or decimal; not a bool or a string). `v` may come from a pattern map.
  double number(const std::string& key, const json* v, double fallback) const {
    if (!v) return fallback;
    if (!v->is_number() || !std::isfinite(v->get<double>())) wrong(key, "a finite number", *v);
    return v->get<double>();
  }
  // A LoRA rank: an integer >= 1.
  int64_t rank(const std::string& key, const json* v, int64_t fallback) const {
    if (!v) return fallback;
    if (!v->is_number_integer() || (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT32_MAX)) ||
        v->get<int64_t>() < 1)
      wrong(key, "a positive integer (the LoRA rank)", *v);
    return v->get<int64_t>();
  }
  // A list or a map (peft writes null for "none"); empty when absent.
  json list_or_map(const std::string& key) const {
    const json* v = json_of(key);
    if (!v) return json::array();
    if (!v->is_array() && !v->is_object()) wrong(key, "a list, a map or null", *v);
    return *v;
  }
  // rank_pattern / alpha_pattern: {regex: value}, each key a valid regular expression.
  json patterns(const std::string& key) const {
    const json* v = json_of(key);
    if (!v) return json::object();
    if (!v->is_object()) wrong(key, "a map from module patterns to values", *v);
    for (auto it = v->begin(); it != v->end(); ++it) {
      try {
        std::regex check(it.key());
      } catch (const std::regex_error& e) {
        throw Error(
            kConfigFile + ": '" + key + "' key '" + it.key() + "' is not a valid regular expression (" + e.what() + ")",
            path_ + ": " + key, "peft matches these keys as regular expressions against module names");
      }
    }
    return *v;
  }

 private:
  std::string path_;
  json json_;
};

}  // namespace

std::string adapter_tensor_name(const std::string& parameter_name) { return kPrefix + parameter_name; }

void save_adapter(models::LanguageModel& model, const std::string& dir, const PeftConfig& config,
                  const std::string& base_model_name_or_path) {
  auto modules = lora_modules(model);
  std::vector<std::pair<std::string, models::GroupedExperts*>> experts;
  for (auto& [name, ex] : expert_modules(model))
    if (ex->has_lora(ExpertProjection::gate_up) || ex->has_lora(ExpertProjection::down)) experts.emplace_back(name, ex);
  if (modules.empty() && experts.empty())
    throw Error("save_adapter: the model has no LoRA adapter", dir, "call apply_lora or load_adapter first");
  io::NamedTensors tensors;
  std::vector<std::string> names;
  // Under transformers' module paths (an image-text model's differ from its checkpoint names), which peft uses.
  for (auto& [name, lin] : modules) {
    tensors.emplace_back(adapter_tensor_name(model.module_name(name) + ".lora_A.weight"), lin->lora_A().detach());
    tensors.emplace_back(adapter_tensor_name(model.module_name(name) + ".lora_B.weight"), lin->lora_B().detach());
    names.push_back(name);
  }
  // The experts' adapters under their parameter names, which are peft's (models/moe_block.h).
  json target_parameters = json::array(), expert_ranks = json::object(), expert_alphas = json::object();
  for (ExpertProjection p : {ExpertProjection::gate_up, ExpertProjection::down}) {
    const std::string parameter = expert_parameter_name(p);
    bool any = false;
    for (auto& [name, ex] : experts) {
      if (!ex->has_lora(p)) continue;
      any = true;
      const int64_t rank = ex->lora_A(p).size(0) / ex->num_experts();
      if (rank != config.dim || ex->lora_scale(p) != config.scale()) {
        const std::string key = "^" + regex_escape(name + "." + parameter) + "$";
        expert_ranks[key] = rank;
        expert_alphas[key] = number(ex->lora_scale(p) * (config.use_rslora ? std::sqrt(double(rank)) : double(rank)));
      }
    }
    if (any) target_parameters.push_back(parameter);
  }
  for (auto& [name, ex] : experts)
    for (auto& [param_name, t] : ex->named_parameters(name))
      if (param_name.find(".lora_") != std::string::npos)
        tensors.emplace_back(adapter_tensor_name(param_name), t.detach());
  json c = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"r", config.dim},
      {"lora_alpha", number(config.alpha)},
      {"lora_dropout", config.dropout},
      {"use_rslora", config.use_rslora},
      {"target_modules", names.empty() ? json::array() : target_modules_json(model, names)},
      {"target_parameters", target_parameters.empty() ? json(nullptr) : target_parameters},
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
    if (lin->lora_A().size(0) != config.dim)
      c["rank_pattern"]["^" + regex_escape(model.module_name(name)) + "$"] = lin->lora_A().size(0);
  c["rank_pattern"].update(expert_ranks);
  c["alpha_pattern"].update(expert_alphas);
  fs::create_directories(dir);
  io::save_safetensors((fs::path(dir) / kWeightsFile).string(), tensors);
  io::write_file_atomic((fs::path(dir) / kConfigFile).string(), c.dump(2) + "\n");
}

namespace {

struct AdapterFiles {
  std::string config, weights;
};

// adapter_config.json and adapter_model.safetensors in `dir`; an Error naming the one that is missing.
AdapterFiles adapter_files(const std::string& dir) {
  const AdapterFiles files{(fs::path(dir) / kConfigFile).string(), (fs::path(dir) / kWeightsFile).string()};
  if (!fs::exists(files.config))
    throw Error("no " + kConfigFile + " in '" + dir + "'", dir, "pass a directory written by peft's save_pretrained");
  if (!fs::exists(files.weights))
    throw Error("no " + kWeightsFile + " in '" + dir + "'", dir,
                fs::exists(fs::path(dir) / "adapter_model.bin")
                    ? "adapter_model.bin (pickle) is not read; save it again with safe_serialization=True"
                    : "pass a directory written by peft's save_pretrained");
  return files;
}

// What adapter_config.json says about the adapters.
struct AdapterSettings {
  PeftConfig config;  // r, alpha, dropout ("pre", peft's), use_rslora; no target modules yet
  std::string base_model_name_or_path;
  json rank_pattern, alpha_pattern;  // {module regex: rank / alpha}
};

// The settings of adapter_config.json; an Error for what this engine cannot run the same way as peft.
AdapterSettings read_settings(const AdapterConfigFile& c, const std::string& config_path) {
  auto unsupported = [&](const std::string& what, const std::string& hint) {
    throw Error("adapter: " + what + " is not supported", config_path, hint);
  };
  const std::string peft_type = c.string("peft_type", "");
  if (peft_type != "LORA") unsupported("peft_type '" + peft_type + "'", "use a LoRA adapter");
  if (c.boolean("use_dora", false)) unsupported("DoRA (use_dora: true)", "train a plain LoRA adapter");
  if (c.boolean("lora_bias", false)) unsupported("lora_bias: true", "train without lora_bias");
  if (c.boolean("fan_in_fan_out", false)) unsupported("fan_in_fan_out: true", "Conv1D bases are not supported");
  if (const std::string bias = c.string("bias", "none"); bias != "none")
    unsupported("bias '" + bias + "'", "train with bias: none");
  if (!c.list_or_map("modules_to_save").empty())
    unsupported("modules_to_save", "train adapters only, without fully trained modules");
  if (!c.list_or_map("layer_replication").empty()) unsupported("layer_replication", "");
  if (!c.list_or_map("trainable_token_indices").empty()) unsupported("trainable_token_indices", "");

  AdapterSettings out;
  out.base_model_name_or_path = c.string("base_model_name_or_path", "");
  PeftConfig& pc = out.config;
  pc.dim = c.rank("r", c.json_of("r"), 8);
  pc.alpha = c.number("lora_alpha", c.json_of("lora_alpha"), 8);
  pc.dropout = c.number("lora_dropout", c.json_of("lora_dropout"), 0.0);
  if (!(pc.dropout >= 0 && pc.dropout < 1)) c.wrong("lora_dropout", "a number in [0, 1)", *c.json_of("lora_dropout"));
  pc.dropout_position = "pre";
  pc.use_rslora = c.boolean("use_rslora", false);
  out.rank_pattern = c.patterns("rank_pattern");
  out.alpha_pattern = c.patterns("alpha_pattern");
  return out;
}

// The names of a module's two adapter tensors in adapter_model.safetensors.
struct LoraKeys {
  std::string a, b;
};

// module -> its lora_A / lora_B tensor names, from peft's names; an Error for any other tensor.
std::map<std::string, LoraKeys> lora_keys(const io::SafetensorsReader& reader) {
  std::map<std::string, LoraKeys> found;
  for (const std::string& key : reader.names()) {
    std::string name = key.rfind(kPrefix, 0) == 0 ? key.substr(kPrefix.size()) : key;
    auto strip = [&](const std::string& suffix) {
      if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
        return false;
      name.resize(name.size() - suffix.size());
      return true;
    };
    if (strip(".lora_A.weight")) {
      found[name].a = key;
    } else if (strip(".lora_B.weight")) {
      found[name].b = key;
    } else {
      throw Error("adapter tensor '" + key + "' is not a LoRA A/B weight", reader.path(),
                  "only lora_A / lora_B weights of linear layers are supported (no embeddings, DoRA or biases)");
    }
  }
  if (found.empty()) throw Error("adapter holds no tensors", reader.path());
  return found;
}

// One module's adapter, read and checked, before it is attached.
struct ModuleAdapter {
  nn::Linear* lin;
  Tensor a, b;
  double scale;
};

// The adapter of module `name` (its tensors in `keys`) for `linears`' layer of that name: both halves present,
// float and finite, shaped for the layer, of the config's rank for it; scaled by the config's alpha for it.
ModuleAdapter read_module(const io::SafetensorsReader& reader, const AdapterConfigFile& c,
                          const AdapterSettings& settings, const std::map<std::string, nn::Linear*>& linears,
                          const std::string& name, const LoraKeys& keys, std::optional<DType> dtype,
                          const std::string& config_path) {
  const std::string& weights_path = reader.path();
  if (keys.a.empty() || keys.b.empty())
    throw Error("adapter for '" + name + "' has only one of lora_A / lora_B", weights_path);
  auto it = linears.find(name);
  if (it == linears.end())
    throw Error("adapter module '" + name + "' is not a linear layer of this model", weights_path,
                "load the adapter onto the base model it was trained on (adapter_config.json: "
                "base_model_name_or_path " +
                    (settings.base_model_name_or_path.empty() ? "null" : "'" + settings.base_model_name_or_path + "'") +
                    ")");
  if (name == "lm_head")
    throw Error("adapter on 'lm_head' is not supported (the LM head's product bypasses nn::Linear)", weights_path);
  // Float weights only, and finite: a NaN here would spread into every merged weight or every step.
  auto weight = [&](const std::string& key) {
    const std::optional<DType> stored = io::default_load_dtype(reader.info(key).dtype);
    return reader.get_weight(key, dtype.value_or(stored && is_floating(*stored) ? *stored : DType::f32));
  };
  Tensor a = weight(keys.a), b = weight(keys.b);
  nn::Linear* lin = it->second;
  if (a.dim() != 2 || b.dim() != 2 || a.size(1) != lin->in_features() || b.size(0) != lin->out_features() ||
      b.size(1) != a.size(0))
    throw Error("adapter for '" + name + "': lora_A " + a.describe() + " and lora_B " + b.describe() +
                    " do not fit weight " + lin->weight.describe(),
                weights_path, "expected lora_A [r, in] and lora_B [out, r]");
  const PeftConfig& pc = settings.config;
  const int64_t rank = a.size(0);
  const std::string rp = pattern_key(settings.rank_pattern, name);
  const int64_t want = rp.empty() ? pc.dim : c.rank("rank_pattern." + rp, &settings.rank_pattern[rp], pc.dim);
  if (rank != want)
    throw Error(
        "adapter for '" + name + "' has rank " + std::to_string(rank) + " but the config says " + std::to_string(want),
        config_path);
  const std::string ap = pattern_key(settings.alpha_pattern, name);
  const double alpha = ap.empty() ? pc.alpha : c.number("alpha_pattern." + ap, &settings.alpha_pattern[ap], pc.alpha);
  const double scale = pc.use_rslora ? alpha / std::sqrt(double(rank)) : alpha / double(rank);
  return {lin, ops::clone(a), ops::clone(b), scale};
}

}  // namespace

namespace {

// One MoE layer's expert adapters, read and checked: [gate_up | down] x [A | B] (undefined: none) and their scales.
struct ExpertAdapters {
  Tensor factors[2][2];
  double scale[2] = {1, 1};
};

// The adapters of the grouped expert tensors (peft's target_parameters) in `keys`, by experts module; their keys are
// taken out of `keys`. peft nests its wrappers in the tensors' order (gate_up_proj, then down_proj): with both
// adapted, gate_up_proj's adapter is `<experts>.base_layer.lora_*` and down_proj's `<experts>.lora_*`; with one, it
// is `<experts>.lora_*`.
std::map<std::string, ExpertAdapters> read_expert_adapters(models::LanguageModel& model,
                                                           std::map<std::string, LoraKeys>& keys,
                                                           const io::SafetensorsReader& reader,
                                                           const AdapterConfigFile& c, const AdapterSettings& settings,
                                                           std::optional<DType> dtype, const std::string& config_path) {
  std::map<std::string, ExpertAdapters> out;
  const auto experts = expert_modules(model);
  if (experts.empty()) return out;
  std::vector<std::string> targets;
  if (const json* t = c.json_of("target_parameters")) {
    if (!t->is_array()) c.wrong("target_parameters", "a list of parameter names", *t);
    for (const json& v : *t) {
      if (!v.is_string()) c.wrong("target_parameters", "a list of parameter names", *t);
      targets.push_back(v.get<std::string>());
    }
  }
  // Other entries (Mixtral's router, `gate.weight`, which peft wraps as a parameter) are the routers' linear layers
  // here, read as such.
  auto targeted = [&](ExpertProjection p) {
    return std::find(targets.begin(), targets.end(), expert_parameter_name(p)) != targets.end();
  };
  for (auto& [name, ex] : experts) {
    auto outer = keys.find(name), inner = keys.find(name + ".base_layer");
    if (outer == keys.end() && inner == keys.end()) continue;
    if (!targeted(ExpertProjection::gate_up) && !targeted(ExpertProjection::down))
      throw Error("adapter has tensors for '" + name +
                      "' but adapter_config.json's target_parameters names neither "
                      "gate_up_proj nor down_proj",
                  config_path, "save the adapter with peft's save_pretrained, which writes target_parameters");
    if (settings.config.dropout != 0)
      throw Error("adapter: lora_dropout with target_parameters is not supported", config_path,
                  "peft has no dropout on grouped expert tensors; set lora_dropout 0");
    // The projection each wrapper holds.
    std::vector<std::pair<ExpertProjection, LoraKeys>> held;
    if (inner != keys.end()) {
      if (!targeted(ExpertProjection::gate_up) || !targeted(ExpertProjection::down) || outer == keys.end())
        throw Error("adapter tensors under '" + name + ".base_layer' need gate_up_proj and down_proj adapted",
                    reader.path(), "the adapter does not fit this model's experts");
      held = {{ExpertProjection::gate_up, inner->second}, {ExpertProjection::down, outer->second}};
    } else {
      if (targeted(ExpertProjection::gate_up) == targeted(ExpertProjection::down))
        throw Error("adapter for '" + name + "': one adapted tensor, but target_parameters names both grouped tensors",
                    config_path, "the adapter does not fit this model's experts");
      held = {
          {targeted(ExpertProjection::gate_up) ? ExpertProjection::gate_up : ExpertProjection::down, outer->second}};
    }
    ExpertAdapters& adapters = out[name];
    for (auto& [p, k] : held) {
      const std::string what = name + "." + expert_parameter_name(p);
      if (k.a.empty() || k.b.empty())
        throw Error("adapter for '" + what + "' has only one of lora_A / lora_B", reader.path());
      auto weight = [&](const std::string& key) {
        const std::optional<DType> stored = io::default_load_dtype(reader.info(key).dtype);
        return reader.get_weight(key, dtype.value_or(stored && is_floating(*stored) ? *stored : DType::f32));
      };
      Tensor a = weight(k.a), b = weight(k.b);
      const Tensor& w = ex->weight(p);
      const int64_t E = ex->num_experts();
      if (a.dim() != 2 || b.dim() != 2 || a.size(0) % E != 0 || a.size(1) != ex->in_features(p) ||
          b.size(0) != ex->out_features(p) || b.size(1) != a.size(0))
        throw Error("adapter for '" + what + "': lora_A " + a.describe() + " and lora_B " + b.describe() +
                        " do not fit " + w.describe(),
                    reader.path(), "expected lora_A [experts x r, in] and lora_B [out, r x experts]");
      const int64_t rank = a.size(0) / E;
      const PeftConfig& pc = settings.config;
      const std::string rp = pattern_key(settings.rank_pattern, what);
      const int64_t want = rp.empty() ? pc.dim : c.rank("rank_pattern." + rp, &settings.rank_pattern[rp], pc.dim);
      if (rank != want)
        throw Error("adapter for '" + what + "' has rank " + std::to_string(rank) + " but the config says " +
                        std::to_string(want),
                    config_path);
      const std::string ap = pattern_key(settings.alpha_pattern, what);
      const double alpha =
          ap.empty() ? pc.alpha : c.number("alpha_pattern." + ap, &settings.alpha_pattern[ap], pc.alpha);
      const int i = p == ExpertProjection::gate_up ? 0 : 1;
      adapters.factors[i][0] = ops::clone(a);
      adapters.factors[i][1] = ops::clone(b);
      adapters.scale[i] = pc.use_rslora ? alpha / std::sqrt(double(rank)) : alpha / double(rank);
    }
    if (outer != keys.end()) keys.erase(outer);
    if (inner != keys.end()) keys.erase(inner);
  }
  return out;
}

}  // namespace

LoadedAdapter load_adapter(models::LanguageModel& model, const std::string& dir, std::optional<DType> dtype,
                           bool trainable) {
  const AdapterFiles files = adapter_files(dir);
  const AdapterConfigFile c(files.config);
  const AdapterSettings settings = read_settings(c, files.config);
  io::SafetensorsReader reader(files.weights);
  std::map<std::string, LoraKeys> keys = lora_keys(reader);
  // peft names modules by transformers' module paths: back to ours (they differ for image-text models).
  std::map<std::string, std::string> ours;
  for (auto& [name, m] : model.named_modules()) ours[model.module_name(name)] = name;
  {
    std::map<std::string, LoraKeys> renamed;
    for (auto& [path, k] : keys) renamed[ours.count(path) ? ours.at(path) : path] = k;
    keys = std::move(renamed);
  }
  const std::map<std::string, ExpertAdapters> expert_adapters =
      read_expert_adapters(model, keys, reader, c, settings, dtype, files.config);

  std::map<std::string, nn::Linear*> linears;
  for (auto& [name, m] : model.named_modules())
    if (auto* lin = dynamic_cast<nn::Linear*>(m)) linears[name] = lin;
  std::map<std::string, ModuleAdapter> adapters;
  for (const auto& [name, module_keys] : keys)
    adapters.emplace(name, read_module(reader, c, settings, linears, name, module_keys, dtype, files.config));

  LoadedAdapter out;
  out.config = settings.config;
  out.base_model_name_or_path = settings.base_model_name_or_path;
  model.set_requires_grad(false);
  nn::LoraSettings s;
  s.dropout = out.config.dropout;
  s.dropout_position = ops::LoraDropoutPosition::pre;
  for (auto& [name, m] : model.named_modules()) {  // model order
    auto it = adapters.find(name);
    if (it == adapters.end()) continue;
    s.scale = it->second.scale;
    it->second.lin->attach_lora(it->second.a, it->second.b, s);
    if (!trainable) {
      it->second.lin->lora_A().set_requires_grad(false);
      it->second.lin->lora_B().set_requires_grad(false);
    }
    out.modules.push_back(name);
    out.config.target_modules.push_back(name);
  }
  for (auto& [name, ex] : expert_modules(model)) {  // model order
    auto it = expert_adapters.find(name);
    if (it == expert_adapters.end()) continue;
    const ExpertAdapters& e = it->second;
    ex->attach_lora(e.factors[0][0], e.factors[0][1], e.scale[0], e.factors[1][0], e.factors[1][1], e.scale[1]);
    for (ExpertProjection p : {ExpertProjection::gate_up, ExpertProjection::down}) {
      if (!ex->has_lora(p)) continue;
      ex->lora_A(p).set_requires_grad(trainable);
      ex->lora_B(p).set_requires_grad(trainable);
      const std::string parameter = expert_parameter_name(p);
      auto& tp = out.config.target_parameters;
      if (std::find(tp.begin(), tp.end(), parameter) == tp.end()) tp.push_back(parameter);
    }
    out.modules.push_back(name);
  }
  return out;
}

}  // namespace automodel::peft
