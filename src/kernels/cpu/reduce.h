#pragma once
// Sums over any set of dims, accumulated in double (f32, f64 and bf16 alike) with several partial
// sums per run, so long sums keep full fp32 accuracy; mean is a sum times 1/count.
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

// out = scale * (sum of x over the dims d with reduce[d] != 0). x is contiguous of `shape`; out is
// contiguous and holds the kept dims in order (keepdim or not, the layout is the same).
void sum_forward(const float* x, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, float* out);
void sum_forward(const double* x, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, double* out);
void sum_forward(const bf16* x, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, bf16* out);

// gx (contiguous, of `shape`) = scale * g broadcast along the reduced dims; g laid out as sum_forward's out.
void sum_backward(const float* g, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, float* gx);
void sum_backward(const double* g, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, double* gx);
void sum_backward(const bf16* g, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, bf16* gx);

}  // namespace automodel::cpu
