#pragma once
// Elementwise add / sub / mul / div with broadcasting, and x * factor. Broadcasting is expressed
// through strides: an input dim of size 1 (or a missing leading dim) is read with stride 0.
#include <cstdint>

#include "core/dtype.h"
#include "kernels/shapes.h"

namespace automodel::cpu {

using kernels::BinaryOp;

// out[i] = a[i] op b[i] over n contiguous elements (out may alias a or b).
void binary_forward(BinaryOp op, const float* a, const float* b, float* out, int64_t n);
void binary_forward(BinaryOp op, const double* a, const double* b, double* out, int64_t n);
void binary_forward(BinaryOp op, const bf16* a, const bf16* b, bf16* out, int64_t n);

// out (contiguous, of `shape`) = a op b, where a and b are read with the given strides (in
// elements; 0 on broadcast dims). Size-1 dims are dropped and mergeable dims merged first, so a
// row broadcast ([M, N] op [N]) runs as M contiguous rows and a scalar operand as one flat loop.
void binary_forward_strided(BinaryOp op, const float* a, const int64_t* a_strides, const float* b,
                            const int64_t* b_strides, float* out, const int64_t* shape, int ndim);
void binary_forward_strided(BinaryOp op, const double* a, const int64_t* a_strides, const double* b,
                            const int64_t* b_strides, double* out, const int64_t* shape, int ndim);
void binary_forward_strided(BinaryOp op, const bf16* a, const int64_t* a_strides, const bf16* b,
                            const int64_t* b_strides, bf16* out, const int64_t* shape, int ndim);

// Gradient of input `which` (0: a, 1: b) of out = a op b, at the output's shape (the caller sums it
// down to the input's shape): g and grad contiguous of `shape`, a and b strided as in the forward.
//   mul: ga = g * b, gb = g * a;  div: ga = g / b, gb = -g * a / (b * b).
//   add: g; sub: ga = g, gb = -g.
void binary_backward(BinaryOp op, int which, const float* g, const float* a, const int64_t* a_strides, const float* b,
                     const int64_t* b_strides, float* grad, const int64_t* shape, int ndim);
void binary_backward(BinaryOp op, int which, const double* g, const double* a, const int64_t* a_strides,
                     const double* b, const int64_t* b_strides, double* grad, const int64_t* shape, int ndim);
void binary_backward(BinaryOp op, int which, const bf16* g, const bf16* a, const int64_t* a_strides, const bf16* b,
                     const int64_t* b_strides, bf16* grad, const int64_t* shape, int ndim);
// bf16 inputs, fp32 gradient: for a broadcast input, whose gradient is summed before rounding.
void binary_backward(BinaryOp op, int which, const bf16* g, const bf16* a, const int64_t* a_strides, const bf16* b,
                     const int64_t* b_strides, float* grad, const int64_t* shape, int ndim);

// out[i] = x[i] * factor (out may alias x). Also the backward of scale (with the same factor).
void scale_forward(const float* x, double factor, float* out, int64_t n);
void scale_forward(const double* x, double factor, double* out, int64_t n);
void scale_forward(const bf16* x, double factor, bf16* out, int64_t n);

}  // namespace automodel::cpu
