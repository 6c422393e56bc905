#pragma once
// Softmax / log-softmax along the middle dim of a contiguous [outer, dim, inner] tensor:
// max-subtracted, statistics in fp32 (double for f64) whatever the storage type. inner == 1 (the
// last dim) is the fast path; otherwise columns are processed in vectorised blocks.
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

void softmax_forward(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner, bool log);
void softmax_forward(const double* x, double* y, int64_t outer, int64_t dim, int64_t inner, bool log);
void softmax_forward(const bf16* x, bf16* y, int64_t outer, int64_t dim, int64_t inner, bool log);

// From the saved output y: softmax: gx = y * (g - sum(g * y)); log: gx = g - exp(y) * sum(g).
void softmax_backward(const float* y, const float* g, float* gx, int64_t outer, int64_t dim, int64_t inner, bool log);
void softmax_backward(const double* y, const double* g, double* gx, int64_t outer, int64_t dim, int64_t inner,
                      bool log);
void softmax_backward(const bf16* y, const bf16* g, bf16* gx, int64_t outer, int64_t dim, int64_t inner, bool log);

// The same gradient from the saved input x, the softmax recomputed in fp32: what the bf16 op uses,
// since a bf16-rounded output loses the small differences 1 - y the gradient depends on.
void softmax_backward_from_input(const bf16* x, const bf16* g, bf16* gx, int64_t outer, int64_t dim, int64_t inner,
                                 bool log);

}  // namespace automodel::cpu
