#pragma once
// Top-k along the last dimension (torch.topk(x, k, dim=-1): largest first, sorted).
#include "core/tensor.h"

namespace automodel::ops {

struct TopK {
  Tensor values;   // [..., k], x's dtype; differentiable (the gradient goes back to the chosen entries)
  Tensor indices;  // [..., k] i64, columns of x
};

// The k largest entries of each row of x ([..., n], 1 <= k <= n); equal values keep their column order.
TopK topk(const Tensor& x, int64_t k);

}  // namespace automodel::ops
