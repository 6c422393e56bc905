#pragma once
// AutoModelForCausalLM: a model directory (or hub id in the local cache) in, a CausalLM out;
// and save_pretrained back to a directory transformers and vLLM load unchanged.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "models/causal_lm.h"

namespace automodel::models {

struct LoadOptions {
  DType dtype = DType::f32;  // parameters are converted to this dtype on load
  bool trainable = true;     // parameters require grad
  // When non-empty and trainable: only parameters whose dotted name matches one of these globs
  // (fnmatch, e.g. "model.layers.*.mlp.*") require grad.
  std::vector<std::string> trainable_patterns;
};

struct SaveOptions {
  int64_t max_shard_bytes = int64_t(5) << 30;  // larger models are split into shards + index
};

// Builds the family's DecoderSpec from a parsed config (one per model_type).
using FamilyFactory = std::function<DecoderSpec(ModelConfig& config)>;
void register_family(const std::string& model_type, FamilyFactory factory);
std::vector<std::string> supported_model_types();

class AutoModelForCausalLM {
 public:
  static std::unique_ptr<CausalLM> from_pretrained(const std::string& name_or_path, const LoadOptions& options = {});
  // Random weights (normal, std = initializer_range) for a parsed config.
  static std::unique_ptr<CausalLM> from_config(const ModelConfig& config, const LoadOptions& options = {},
                                               uint64_t seed = 0);
};

ModelConfig load_config(const std::string& model_dir);

// config.json, generation_config.json and model.safetensors (or shards + index).
void save_pretrained(const CausalLM& model, const std::string& dir, const SaveOptions& options = {});

}  // namespace automodel::models
