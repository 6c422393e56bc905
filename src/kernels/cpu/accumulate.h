#pragma once
// out[i] = a[i] + b[i] over same-shaped contiguous buffers (out may alias a): how the autograd
// engine sums gradients that reach one tensor along several paths.
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

void add_same_shape(const float* a, const float* b, float* out, int64_t n);
void add_same_shape(const double* a, const double* b, double* out, int64_t n);
void add_same_shape(const bf16* a, const bf16* b, bf16* out, int64_t n);

}  // namespace automodel::cpu
