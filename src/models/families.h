#pragma once
// Registration of the built-in architecture families (one file each). Called once by the
// registry before the first lookup; explicit, so the linker cannot drop a family file.
#include <string>

#include "models/config.h"

namespace automodel::models {

// Error naming config.json's hidden_act unless it is silu (the SwiGLU families).
void require_silu(const ModelConfig& config, const std::string& family);

void register_llama_family();
void register_mistral_family();
void register_qwen2_family();
void register_qwen3_family();
void register_gemma_family();
void register_gemma2_family();
void register_phi3_family();

}  // namespace automodel::models
