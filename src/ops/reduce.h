#pragma once
// Sum and mean over dimensions.
#include <vector>

#include "core/tensor.h"

namespace automodel::ops {

// Over `dims` (negative allowed; empty = all dims).
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);

// Sums x down to `shape` (the inverse of broadcasting shape to x's shape); no autograd needed by
// callers that use it inside backward functions, but it records like any op.
Tensor sum_to_shape(const Tensor& x, const Shape& shape);

}  // namespace automodel::ops
