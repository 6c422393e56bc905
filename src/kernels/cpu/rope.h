#pragma once
// Rotary position embeddings on a contiguous [batch, seq, heads, head_dim] buffer.
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

struct RopeParams {
  int64_t batch = 0, seq = 0, heads = 0, head_dim = 0;
  int64_t half_rot = 0;          // R / 2 = number of inv_freq entries; dims [R, head_dim) pass through
  int64_t pos_batch_stride = 0;  // position_ids[b * stride + t]: seq for [B, T], 0 for [T] / [1, T]
  bool interleaved = false;      // pairs (2i, 2i + 1) instead of (i, i + R/2)
  double attention_scaling = 1.0;
};

// y = rotation of x by angle[b, t, i] = float(pos[b, t]) * inv_freq[i] (computed in fp32 as
// transformers does); cos and sin are multiplied by attention_scaling and, for bf16, rounded to bf16
// (transformers casts them to the activation dtype). cos / sin are computed once per (b, t).
template <class T>
void rope_forward(const T* x, T* y, const int64_t* pos, const float* inv_freq, const RopeParams& p);

// dx = rotation of dy by -angle (the transpose of the forward rotation).
template <class T>
void rope_backward(const T* dy, T* dx, const int64_t* pos, const float* inv_freq, const RopeParams& p);

}  // namespace automodel::cpu
