#pragma once
// Joining, splitting and gathering along a dim.
#include <vector>

#include "core/tensor.h"

namespace automodel::ops {

Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
// Pieces of the given sizes along dim (they must add up to x.size(dim)).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
// torch.gather: out[i][j] = x[i][index[i][j]] for dim 1 (and likewise for any dim); index is i64.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);

}  // namespace automodel::ops
