#pragma once
// LoRA settings with NeMo Automodel's `peft:` keys and defaults, and its module matching: which
// linear layers of a model get an adapter.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace automodel::peft {

struct PeftConfig {
  // Patterns over dotted module names (`model.layers.0.self_attn.q_proj`): `*` matches any run of
  // characters and the whole name must match (NeMo's wildcard_match); a pattern equal to the name
  // matches too. Nothing set (and match_all_linear false) means target_modules = {"*_proj"}.
  std::vector<std::string> target_modules;
  std::vector<std::string> exclude_modules;  // every linear layer except these (exclusive with target)
  bool match_all_linear = false;             // every linear layer (exclusive with both lists)
  // peft's target_parameters: grouped MoE expert tensors by name ("gate_up_proj", "down_proj"), each with an
  // adapter per expert (rank dim); no dropout (peft has none there). Alone it selects no linear layer.
  std::vector<std::string> target_parameters;
  int64_t dim = 8;  // rank r
  double alpha = 32;
  double dropout = 0.0;
  std::string dropout_position = "post";  // "pre" (on x, as peft) or "post" (on the branch output)
  std::string lora_A_init = "xavier";     // xavier (normal), kaiming or uniform (kaiming_uniform a=sqrt(5))
  std::optional<DType> lora_dtype;        // adapter dtype; unset: the base weight's
  bool use_rslora = false;                // scale alpha / sqrt(r) instead of alpha / r

  double scale() const;
};

// Throws automodel::Error for rank <= 0, negative alpha, dropout outside [0, 1), an unknown
// dropout_position or lora_A_init, and mutually exclusive selections (target_modules with
// exclude_modules, match_all_linear with either).
void validate(const PeftConfig& config);

// The target patterns in force: target_modules, or {"*_proj"} when nothing (target_parameters neither) selects.
std::vector<std::string> effective_target_modules(const PeftConfig& config);

// NeMo's wildcard_match: pattern (with `*`) against a dotted name, anchored at both ends.
bool wildcard_match(const std::string& pattern, const std::string& name);

// Whether a linear layer named `name` (module_path: its transformers module path, which NeMo's patterns are written
// against; an image-text model's differ from our names) is selected by the config: a target pattern matching either
// selects it, an exclude pattern matching either leaves it out.
bool selects(const PeftConfig& config, const std::string& name, const std::string& module_path);

// Whether the config's target_parameters name the grouped expert tensor `parameter` ("gate_up_proj", "down_proj").
bool selects_parameter(const PeftConfig& config, const std::string& parameter);

// "float32" / "fp32" / "f32" / "torch.float32", "bfloat16" / "bf16" / "torch.bfloat16" ... -> DType.
DType parse_lora_dtype(const std::string& name);

}  // namespace automodel::peft
