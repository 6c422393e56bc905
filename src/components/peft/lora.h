#pragma once
// LoRA on a causal LM: attach adapters to the linear layers a PeftConfig selects (base frozen),
// switch their dropout between training and evaluation, and merge them into the base weights.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "components/peft/peft_config.h"
#include "models/language_model.h"
#include "models/moe_block.h"
#include "nn/linear.h"

namespace automodel::peft {

// Freezes every parameter of `model`, then gives each selected nn::Linear an adapter: lora_A
// [dim, in] drawn as config.lora_A_init from Generator(seed) (module order), lora_B [out, dim]
// zeros, in config.lora_dtype (default the weight's); and each MoE layer's grouped expert tensors
// named by config.target_parameters theirs (lora_A [E * dim, in] drawn as peft draws it, kaiming-uniform
// over in, lora_B zeros). Returns the adapted module names in model order. Throws for a bad config, a
// selection with nothing to adapt, or a layer already adapted.
std::vector<std::string> apply_lora(models::LanguageModel& model, const PeftConfig& config, uint64_t seed = 0);

// Every adapted linear layer by dotted name, in model order.
std::vector<std::pair<std::string, nn::Linear*>> lora_modules(models::LanguageModel& model);

// Every MoE block's grouped experts (models/moe_block.h) by dotted name, in model order, adapted or not.
std::vector<std::pair<std::string, models::GroupedExperts*>> expert_modules(models::LanguageModel& model);

// Adapter dropout on (training) or off (evaluation).
void set_lora_training(models::LanguageModel& model, bool training);

// W += scale * B A for every adapter (in fp32, or f64 for f64 weights; rounded once to W's dtype; the
// experts' per expert), then detaches the adapters. Returns the merged module names.
std::vector<std::string> merge_lora(models::LanguageModel& model);

// merge_lora, then models::save_pretrained into `dir`: a plain Hugging Face model directory.
void save_merged_pretrained(models::LanguageModel& model, const std::string& dir);

}  // namespace automodel::peft
