#pragma once
// Token embedding lookup.
#include "core/tensor.h"

namespace automodel::ops {

// ids (i64 or i32, any shape) -> [..., hidden] rows of weight [vocab, hidden]. Rows looked up at
// padding_idx get no gradient (padding_idx < 0: none). Out-of-range ids are an Error.
Tensor embedding(const Tensor& ids, const Tensor& weight, int64_t padding_idx = -1);

}  // namespace automodel::ops
