#pragma once
// AutoModelForCausalLM: a model directory (or hub id in the local cache) in, a LanguageModel out;
// and save_pretrained back to a directory transformers and vLLM load unchanged.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/safetensors.h"
#include "models/causal_lm.h"
#include "models/language_model.h"

namespace automodel::models {

struct LoadOptions {
  DType dtype = DType::f32;  // parameters are converted to this dtype on load
  bool trainable = true;     // parameters require grad
  // When non-empty and trainable: only parameters whose dotted name matches one of these globs
  // (fnmatch, e.g. "model.layers.*.mlp.*") require grad.
  std::vector<std::string> trainable_patterns;
  // config.json keys replaced before the model is built (as transformers' from_pretrained(path, key=value) sets
  // them, e.g. output_router_logits); checked like the file's own values and saved with the model.
  nlohmann::json config_overrides = nlohmann::json::object();
};

struct SaveOptions {
  int64_t max_shard_bytes = int64_t(5) << 30;  // larger models are split into shards + index
};

// Reads a parsed config (one per model_type; it may fill in family defaults such as layer_windows) into the
// family's Architecture: its layers' spec, the factory building each layer, its checkpoint layout.
using FamilyFactory = std::function<Architecture(ModelConfig& config)>;
void register_family(const std::string& model_type, FamilyFactory factory);
std::vector<std::string> supported_model_types();

class AutoModelForCausalLM {
 public:
  static std::unique_ptr<LanguageModel> from_pretrained(const std::string& name_or_path,
                                                        const LoadOptions& options = {});
  // Random weights (normal, std = initializer_range) for a parsed config.
  static std::unique_ptr<LanguageModel> from_config(const ModelConfig& config, const LoadOptions& options = {},
                                                    uint64_t seed = 0);
};

ModelConfig load_config(const std::string& model_dir);

// The family's model for a parsed config (an Error naming model_type when no family has it), with the modules'
// own initial values; from_pretrained and from_config fill the parameters.
std::unique_ptr<CausalLM> build_causal_lm(ModelConfig config, DType dtype);
// Sets requires_grad on every parameter of `model` as options.trainable / trainable_patterns say (an Error when no
// name matches the patterns).
void apply_trainable(nn::Module& model, const LoadOptions& options);
// Copies every parameter of `model` from the checkpoint in dir through `adapter`; a tensor absent under its name
// is looked up under other_names(name) in order, when given (other writers' names). Missing tensors and wrong
// shapes are Errors naming them (and model_type).
void load_weights(nn::Module& model, const StateDictAdapter& adapter, const std::string& dir,
                  const std::string& model_type,
                  const std::function<std::vector<std::string>(const std::string&)>& other_names = nullptr);
// transformers' name of a dtype in config.json ("bfloat16", "float32", ...).
const char* hf_dtype_name(DType dtype);
// A JSON file (io::read_json_file), with numbers no double holds an Error naming the file.
nlohmann::json read_json(const std::string& path);

// The model's parameters under their Hugging Face names and layout (through its StateDictAdapter), as
// save_pretrained writes them.
io::NamedTensors hf_state_dict(const LanguageModel& model);

// config.json, generation_config.json and model.safetensors (or shards + index).
void save_pretrained(const LanguageModel& model, const std::string& dir, const SaveOptions& options = {});

}  // namespace automodel::models
