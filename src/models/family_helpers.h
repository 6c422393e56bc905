#pragma once
// Config readers shared by several family files (each defined in the family that introduced it).
#include <string>

#include "models/config.h"
#include "models/decoder_layer.h"

namespace automodel::models {

// Error naming config.json's hidden_act unless it is silu (the SwiGLU families). llama.cpp.
void require_silu(const ModelConfig& config, const std::string& family);

// Gemma's MLP activation from `hidden_activation` (older files: `hidden_act`). gemma.cpp; Gemma 2 too.
MlpActivation gemma_activation(const ModelConfig& config);

// Qwen's use_sliding_window / sliding_window / max_window_layers / layer_types into layer_windows. qwen2.cpp;
// Qwen3 too.
void apply_qwen_windows(ModelConfig& config);

}  // namespace automodel::models
