#pragma once
// LayerNorm over the last dim of a [rows, hidden] buffer with torch semantics (biased variance):
// y = (x - mean) * rstd * w + b, rstd = 1 / sqrt(var + eps). Statistics in compute_t<T>.
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

// w and b may be null. Writes y and the per-row mean and rstd.
template <class T>
void layernorm_forward(const T* x, const T* w, const T* b, T* y, compute_t<T>* mean, compute_t<T>* rstd, int64_t rows,
                       int64_t hidden, double eps);

// Gradients from g = dL/dy; each of dx, dw, db is computed when not null (dw/db summed over rows
// with per-thread partial sums, in a fixed order).
template <class T>
void layernorm_backward(const T* g, const T* x, const T* w, const compute_t<T>* mean, const compute_t<T>* rstd, T* dx,
                        T* dw, T* db, int64_t rows, int64_t hidden);

}  // namespace automodel::cpu
