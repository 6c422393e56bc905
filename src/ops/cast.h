#pragma once
// dtype conversion (f32 <-> bf16 / f16 / f64, round to nearest even); the gradient is cast back.
#include "core/tensor.h"

namespace automodel::ops {

Tensor to_dtype(const Tensor& x, DType dtype);  // x itself when already of that dtype

}  // namespace automodel::ops
