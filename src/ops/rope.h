#pragma once
// Rotary position embeddings on [batch, seq, heads, head_dim] tensors.
#include "core/tensor.h"

namespace automodel::ops {

enum class RopeStyle {
  half,         // Llama/HF rotate_half: pairs (i, i + d/2)
  interleaved,  // GPT-J / original RoPE: pairs (2i, 2i + 1)
};

// x [B, T, H, D]; position_ids [B, T] or [T] (i64); inv_freq [R/2] f32 with R <= D rotated dims
// (the rest pass through). angle = float(pos) * inv_freq in fp32 as transformers does; cos and sin
// are multiplied by attention_scaling (longrope / yarn).
Tensor rope(const Tensor& x, const Tensor& position_ids, const Tensor& inv_freq, RopeStyle style = RopeStyle::half,
            double attention_scaling = 1.0);

}  // namespace automodel::ops
