#pragma once
// Grouped GEMM: the linear layers of `groups` experts, each on its own block of rows, in one call. x [rows, k] holds
// the rows of group 0, then group 1, ... (counts[g] rows each, sum = rows); w [groups, n, k] holds one weight matrix
// per group, as nn.Linear stores it. A group with no rows is skipped (its weight gradient is zero). Each group runs
// the GEMM of kernels/cpu/gemm.h (oneDNN for float and bf16: fp32 accumulation; OpenBLAS for double).
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

// y[rows of g, :] = x[rows of g, :] @ w[g]^T: y [rows, n]. counts is host memory, each count >= 0. With
// w_transposed, w is [groups, k, n] (each group's matrix stored [in, out], as GPT-OSS's experts) and y = x @ w[g].
template <class T>
void grouped_gemm_forward(const T* x, const T* w, const int64_t* counts, int64_t groups, int64_t n, int64_t k,
                          bool w_transposed, T* y);

// dx[rows of g, :] = g[rows of g, :] @ w[g] (dx [rows, k]); dw[g] = g[rows of g, :]^T @ x[rows of g, :] (dw
// [groups, n, k], zero for a group with no rows; with w_transposed, w and dw are [groups, k, n]). Either output may be
// null (not wanted).
template <class T>
void grouped_gemm_backward(const T* grad, const T* x, const T* w, const int64_t* counts, int64_t groups, int64_t n,
                           int64_t k, bool w_transposed, T* dx, T* dw);

}  // namespace automodel::cpu
