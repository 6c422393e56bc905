#include "models/auto_model.h"

#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>

#include "core/error.h"
#include "core/rng.h"
#include "io/hf_dir.h"
#include "io/safetensors.h"
#include "models/families.h"
#include "models/vision_language_model.h"
#include "nn/init.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "ops/view.h"

namespace automodel::models {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::map<std::string, FamilyFactory>& families() {
  static std::map<std::string, FamilyFactory> map;
  return map;
}

// The family table with the built-in families registered (once, on first use).
std::map<std::string, FamilyFactory>& registry() {
  static std::once_flag builtins;
  std::call_once(builtins, [] {
    register_llama_family();
    register_mistral_family();
    register_qwen2_family();
    register_qwen3_family();
    register_gemma_family();
    register_gemma2_family();
    register_gemma3_text_family();
    register_phi3_family();
    register_qwen3_moe_family();
    register_mixtral_family();
    register_gpt_oss_family();
  });
  return families();
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

}  // namespace

const char* hf_dtype_name(DType dt) {
  switch (dt) {
    case DType::bf16: return "bfloat16";
    case DType::f16: return "float16";
    case DType::f64: return "float64";
    default: return "float32";
  }
}

json read_json(const std::string& path) {
  try {
    return io::read_json_file(path);
  } catch (const json::out_of_range& e) {
    throw Error("invalid JSON in " + path + ": " + e.what(), path, "fix the number there");
  }
}

std::unique_ptr<CausalLM> build_causal_lm(ModelConfig config, DType dtype) {
  auto& table = registry();
  auto it = table.find(config.model_type);
  if (it == table.end())
    throw Error("unsupported model_type '" + config.model_type + "'", config.source + ": model_type",
                "supported model types: " + join(supported_model_types()));
  AM_CHECK(dtype == DType::f32 || dtype == DType::bf16, "models load as f32 or bf16, not ", dtype_name(dtype));
  check_parameters_fit_in_memory(config, dtype_size(dtype), hf_dtype_name(dtype));
  Architecture architecture = it->second(config);
  return std::make_unique<CausalLM>(std::move(config), std::move(architecture), dtype);
}

void apply_trainable(nn::Module& model, const LoadOptions& options) {
  model.set_requires_grad(options.trainable && options.trainable_patterns.empty());
  if (options.trainable && !options.trainable_patterns.empty()) {
    size_t matched = 0;
    for (auto& [name, param] : model.named_parameters()) {
      bool on = std::any_of(
          options.trainable_patterns.begin(), options.trainable_patterns.end(),
          [&, &param_name = name](const std::string& p) { return fnmatch(p.c_str(), param_name.c_str(), 0) == 0; });
      param.set_requires_grad(on);
      matched += on;
    }
    if (matched == 0)
      throw Error("no parameter matches the trainable patterns " + join(options.trainable_patterns), "LoadOptions",
                  "patterns are globs over names like model.layers.0.self_attn.q_proj.weight");
  }
}

namespace {

std::unique_ptr<CausalLM> build(ModelConfig config, const LoadOptions& options) {
  auto model = build_causal_lm(std::move(config), options.dtype);
  apply_trainable(*model, options);
  return model;
}

}  // namespace

void register_family(const std::string& model_type, FamilyFactory factory) { families()[model_type] = factory; }

std::vector<std::string> supported_model_types() {
  std::vector<std::string> out;
  for (auto& [name, f] : registry()) out.push_back(name);
  return out;
}

ModelConfig load_config(const std::string& model_dir) {
  const std::string path = (fs::path(model_dir) / "config.json").string();
  if (!fs::exists(path))
    throw Error("no config.json in " + model_dir, model_dir,
                "point at a directory written by transformers' save_pretrained");
  const json j = read_json(path);
  if (j.is_object() && j.contains("model_type") && j["model_type"].is_string()) {
    const std::vector<std::string> vlm_types = supported_vision_language_model_types();
    const std::string type = j["model_type"].get<std::string>();
    if (std::find(vlm_types.begin(), vlm_types.end(), type) != vlm_types.end())
      throw Error(
          "model_type '" + type + "' is an image-text-to-text model, not a causal LM", path + ": model_type",
          "this takes causal LMs only; image-text models load as such (generate / logprobs take them with --messages, "
          "finetune vlm trains them, inspect describes them)");
  }
  ModelConfig config = ModelConfig::from_json(j, path);
  const std::string gen = (fs::path(model_dir) / "generation_config.json").string();
  if (fs::exists(gen)) config.generation_config = read_json(gen);
  return config;
}

std::unique_ptr<LanguageModel> AutoModelForCausalLM::from_pretrained(const std::string& name_or_path,
                                                                     const LoadOptions& options) {
  const std::string dir = io::resolve_model_dir(name_or_path);
  ModelConfig config = load_config(dir);
  if (!options.config_overrides.empty()) {
    nlohmann::json raw = config.raw;
    raw.update(options.config_overrides);
    nlohmann::json generation = config.generation_config;
    config = ModelConfig::from_json(raw, config.source);
    config.generation_config = std::move(generation);
  }
  std::unique_ptr<LanguageModel> model;
  {
    nn::SkipInitGuard skip;  // every parameter is overwritten below
    model = build(std::move(config), options);
  }
  load_weights(*model, model->state_dict_adapter(), dir, model->config().model_type);
  return model;
}

void load_weights(nn::Module& model, const StateDictAdapter& adapter, const std::string& dir,
                  const std::string& model_type,
                  const std::function<std::vector<std::string>(const std::string&)>& other_names) {
  io::ShardedReader reader(dir);
  std::vector<std::string> missing;
  for (auto& [name, param] : model.named_parameters()) {
    // The name a tensor has in this checkpoint: its own, else the first of other_names it holds; "" when absent.
    auto stored_name = [&](const std::string& hf_name) -> std::string {
      if (reader.contains(hf_name)) return hf_name;
      if (other_names)
        for (const std::string& other : other_names(hf_name))
          if (reader.contains(other)) return other;
      return "";
    };
    // The layout the checkpoint holds: the first complete one, else (to name what is missing) the most complete.
    const std::vector<std::vector<HfTensorSpec>> layouts = adapter.hf_read_layouts(name, param.shape());
    auto missing_of = [&](const std::vector<HfTensorSpec>& l) {
      return std::count_if(l.begin(), l.end(), [&](const HfTensorSpec& hf) { return stored_name(hf.name).empty(); });
    };
    const std::vector<HfTensorSpec>& layout =
        *std::min_element(layouts.begin(), layouts.end(), [&](const auto& x, const auto& y) {
          return missing_of(x) * int64_t(y.size()) < missing_of(y) * int64_t(x.size());
        });
    std::vector<std::string> stored;  // the name each tensor has in this checkpoint
    std::vector<bool> raw;
    for (const HfTensorSpec& hf : layout) {
      const std::string file_name = stored_name(hf.name);
      if (file_name.empty()) {
        missing.push_back(hf.name);
        continue;
      }
      const io::TensorInfo& info = reader.info(file_name);
      if (info.shape != hf.shape)
        throw Error("tensor '" + file_name + "' has shape " + shape_str(info.shape) +
                        " in the checkpoint but the config implies " + shape_str(hf.shape),
                    reader.file_of(file_name), "the weights and config.json disagree; re-export the model");
      stored.push_back(file_name);
      raw.push_back(hf.raw);
    }
    if (stored.size() != layout.size()) continue;
    std::vector<Tensor> parts;
    for (size_t i = 0; i < stored.size(); ++i)
      parts.push_back(raw[i] ? reader.get(stored[i]) : reader.get_weight(stored[i], param.dtype()));
    // Dequantized parts (MXFP4) come in fp32 whatever the model's dtype.
    Tensor value = adapter.from_hf(name, std::move(parts));
    ops::copy_into(param, value.dtype() == param.dtype() ? value : ops::to_dtype(value, param.dtype()));
  }
  if (!missing.empty())
    throw Error(
        "checkpoint is missing " + std::to_string(missing.size()) + " tensor(s): " +
            join(std::vector<std::string>(missing.begin(), missing.begin() + std::min<size_t>(missing.size(), 8))),
        dir, "the checkpoint does not match config.json (model_type " + model_type + ")");
}

std::unique_ptr<LanguageModel> AutoModelForCausalLM::from_config(const ModelConfig& config, const LoadOptions& options,
                                                                 uint64_t seed) {
  std::unique_ptr<CausalLM> model;
  {
    nn::SkipInitGuard skip;
    model = build(config, options);
  }
  // transformers' _init_weights: normal(0, initializer_range) for matrices, zero biases, unit
  // norms (zero for Gemma's (1 + w) form).
  const double std_dev = json_get<double>(config.raw, "initializer_range", 0.02, config.source);
  if (!(std_dev >= 0 && std::isfinite(std_dev)))
    config_error(config.source, "initializer_range",
                 "must be a non-negative finite number, got " + std::to_string(std_dev));
  Generator gen(seed);
  for (auto& [name, param] : model->named_parameters()) {
    const bool is_norm = name.find("norm.weight") != std::string::npos;
    Tensor value;
    if (is_norm)
      value = Tensor::full(param.shape(), model->spec().norm_unit_offset ? 0.0 : 1.0, param.dtype());
    else if (name.size() > 5 && name.substr(name.size() - 5) == ".bias")
      value = Tensor::zeros(param.shape(), param.dtype());
    else
      value = ops::to_dtype(ops::scale(randn(param.shape(), gen, DType::f32), std_dev), param.dtype());
    ops::copy_into(param, value);
  }
  return model;
}

io::NamedTensors hf_state_dict(const LanguageModel& model) {
  const StateDictAdapter& adapter = model.state_dict_adapter();
  io::NamedTensors tensors;
  for (auto& [name, param] : model.named_parameters()) {
    const std::vector<HfTensorSpec> layout = adapter.hf_layout(name, param.shape());
    std::vector<Tensor> values = adapter.to_hf(name, param.detach());
    AM_CHECK(values.size() == layout.size(), "the state dict adapter gave ", values.size(), " tensors for '", name,
             "', its layout names ", layout.size());
    for (size_t i = 0; i < layout.size(); ++i) {
      AM_CHECK(values[i].shape() == layout[i].shape, "the state dict adapter gave '", layout[i].name, "' shape ",
               shape_str(values[i].shape()), ", its layout says ", shape_str(layout[i].shape));
      tensors.emplace_back(layout[i].name, ops::contiguous(values[i]));
    }
  }
  return tensors;
}

void save_pretrained(const LanguageModel& model, const std::string& dir, const SaveOptions& options) {
  fs::create_directories(dir);
  const ModelConfig& config = model.config();
  json cj, gen;
  if (const auto* image_text = dynamic_cast<const VisionLanguageModel*>(&model)) {
    VisionLanguageConfig c = image_text->vision_language_config();  // its own config.json (text_config, vision_config)
    c.dtype = hf_dtype_name(model.dtype());
    cj = c.to_json();
    gen = c.generation_config;
  } else {
    ModelConfig c = config;
    c.dtype = hf_dtype_name(model.dtype());
    cj = c.to_json();
    gen = c.generation_config;
  }
  io::write_file_atomic((fs::path(dir) / "config.json").string(), cj.dump(2) + "\n");
  if (!gen.is_object()) gen = json::object();
  if (gen.empty()) {
    gen["_from_model_config"] = true;
    if (config.bos_token_id) gen["bos_token_id"] = *config.bos_token_id;
    if (config.eos_token_ids.size() == 1)
      gen["eos_token_id"] = config.eos_token_ids[0];
    else if (!config.eos_token_ids.empty())
      gen["eos_token_id"] = config.eos_token_ids;
    if (config.pad_token_id) gen["pad_token_id"] = *config.pad_token_id;
  }
  io::write_file_atomic((fs::path(dir) / "generation_config.json").string(), gen.dump(2) + "\n");
  io::write_sharded(dir, hf_state_dict(model), uint64_t(options.max_shard_bytes));
}

}  // namespace automodel::models
