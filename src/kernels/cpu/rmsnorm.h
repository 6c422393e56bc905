#pragma once
// RMSNorm over the last dim of a [rows, hidden] buffer: y = x * rsqrt(mean(x^2) + eps) * w, or
// * (1 + w) with unit_offset (Gemma). Statistics in compute_t<T> (fp32; f64 for double).
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

// w may be null (no affine). Writes y and the per-row rstd. For bf16 without unit_offset the
// normalised value is rounded to bf16 before the weight multiplies it, as transformers'
// LlamaRMSNorm does (weight * hidden_states.to(input_dtype)); with unit_offset it is rounded once
// at the end, as GemmaRMSNorm does.
template <class T>
void rmsnorm_forward(const T* x, const T* w, T* y, compute_t<T>* rstd, int64_t rows, int64_t hidden, double eps,
                     bool unit_offset);

// The residual add fused in front: sum = x + residual (rounded to T, as a separate add would), then
// y = rmsnorm(sum) as above; writes sum, y and rstd in one pass over each row.
template <class T>
void add_rmsnorm_forward(const T* x, const T* residual, const T* w, T* sum, T* y, compute_t<T>* rstd, int64_t rows,
                         int64_t hidden, double eps, bool unit_offset);

// Gradients from g = dL/dy: dx (if not null) and dw (if not null and w not null; summed over rows
// with per-thread partial sums, in a fixed order). dx_add (if not null) is added to dx before it is
// rounded: the gradient the residual stream brings to a fused add + norm.
template <class T>
void rmsnorm_backward(const T* g, const T* x, const T* w, const compute_t<T>* rstd, T* dx, T* dw, int64_t rows,
                      int64_t hidden, bool unit_offset, const T* dx_add = nullptr);

}  // namespace automodel::cpu
