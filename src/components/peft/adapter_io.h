#pragma once
// LoRA adapters in the Hugging Face `peft` format: adapter_config.json + adapter_model.safetensors
// with peft's tensor names (`base_model.model.<module>.lora_A.weight` [r, in], `...lora_B.weight`
// [out, r]); what peft's save_pretrained writes and PeftModel.from_pretrained reads.
#include <optional>
#include <string>
#include <vector>

#include "components/peft/peft_config.h"
#include "models/language_model.h"

namespace automodel::peft {

// Writes the model's adapters into `dir` (created if needed): adapter_model.safetensors (tensors in
// their dtype) and adapter_config.json (peft_type LORA, task_type CAUSAL_LM, r, lora_alpha,
// lora_dropout, use_rslora, target_modules naming exactly the adapted layers, ...). Each file is
// written atomically. Throws when the model has no adapter.
void save_adapter(models::LanguageModel& model, const std::string& dir, const PeftConfig& config,
                  const std::string& base_model_name_or_path = "");

// peft's name in adapter_model.safetensors for an adapter parameter of the model
// ("model.layers.0.self_attn.q_proj.lora_A.weight" ->
// "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").
std::string adapter_tensor_name(const std::string& parameter_name);

struct LoadedAdapter {
  PeftConfig config;                 // r, alpha, dropout ("pre", peft's), use_rslora; target = the modules
  std::vector<std::string> modules;  // adapted module names in model order
  std::string base_model_name_or_path;
};

// Attaches the adapter in `dir` (written by peft or by save_adapter) to `model`: freezes the base,
// one adapter per module named in adapter_model.safetensors, rank from the tensors, alpha from
// lora_alpha / alpha_pattern, scale alpha / r (alpha / sqrt(r) with use_rslora), peft's dropout
// (on x). `dtype` converts the adapter tensors (default: as stored); `trainable` makes them
// require grad. Throws for what this engine cannot run the same way (DoRA, lora_bias,
// modules_to_save, non-LoRA adapters) and for names or shapes that don't fit the model.
LoadedAdapter load_adapter(models::LanguageModel& model, const std::string& dir, std::optional<DType> dtype = {},
                           bool trainable = true);

}  // namespace automodel::peft
