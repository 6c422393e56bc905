#pragma once
// RoPE inverse frequencies for each rope_type transformers knows here (default, linear, dynamic,
// llama3, longrope, yarn), computed in fp32 the way transformers computes them.
#include <vector>

#include "core/tensor.h"
#include "models/config.h"

namespace automodel::models {

struct RopeFrequencies {
  Tensor inv_freq;                 // f32 [rotary_dim / 2]
  double attention_scaling = 1.0;  // multiplies cos and sin
};

// Number of rotated dims per head (head_dim * partial_rotary_factor, even).
int64_t rotary_dim(const ModelConfig& config);

// Frequencies for a forward pass whose largest position id is seq_len - 1 (dynamic and longrope
// depend on it; the others don't). Unsupported rope types are an Error naming them.
RopeFrequencies rope_frequencies(const ModelConfig& config, int64_t seq_len);

}  // namespace automodel::models
