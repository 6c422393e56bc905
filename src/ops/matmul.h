#pragma once
// Matrix products. fp32/f64 through OpenBLAS, bf16 through oneDNN with fp32 accumulation.
#include "core/tensor.h"

namespace automodel::ops {

// a [..., M, K] @ b [..., K, N] -> [..., M, N] (with transpose_a, a is [..., K, M]; with transpose_b,
// b is [..., N, K]). Batch dims broadcast (b may be 2-D and shared by every batch). Output dtype is
// the inputs' dtype (both must match).
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a = false, bool transpose_b = false);

// x [..., in] @ weight[out, in]^T + bias[out] -> [..., out]. bias may be undefined.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

}  // namespace automodel::ops
