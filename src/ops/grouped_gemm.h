#pragma once
// Grouped GEMM (kernels/cpu/grouped_gemm.h): the linear layers of all experts of a mixture-of-experts layer in one
// op, each expert on its own contiguous block of rows (as moe_permute lays them out).
#include "core/tensor.h"

namespace automodel::ops {

// x [rows, in] (counts[g] rows for group g, in order), w [groups, out, in], counts [groups] i64 summing to rows ->
// [rows, out], the rows of group g times w[g]^T (F.linear per expert). With w_transposed, w is [groups, in, out]
// (each expert's matrix as GPT-OSS stores it) and the rows are times w[g], with no copy of w. Differentiable in x and
// w; a group without rows costs nothing and gets a zero weight gradient.
Tensor grouped_gemm(const Tensor& x, const Tensor& w, const Tensor& counts, bool w_transposed = false);

}  // namespace automodel::ops
