#pragma once
// Rotary position embeddings on a contiguous [batch, seq, heads, head_dim] buffer.
#include <cstdint>

#include "core/dtype.h"
#include "kernels/shapes.h"

namespace automodel::cpu {

using kernels::RopeParams;

// y = rotation of x by angle[b, t, i] = float(pos[b, t]) * inv_freq[i] (computed in fp32 as
// transformers does); cos and sin are multiplied by attention_scaling and, for bf16, rounded to bf16
// (transformers casts them to the activation dtype). cos / sin are computed once per (b, t).
template <class T>
void rope_forward(const T* x, T* y, const int64_t* pos, const float* inv_freq, const RopeParams& p);

// dx = rotation of dy by -angle (the transpose of the forward rotation).
template <class T>
void rope_backward(const T* dy, T* dx, const int64_t* pos, const float* inv_freq, const RopeParams& p);

}  // namespace automodel::cpu
