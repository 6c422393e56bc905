#pragma once
// Elementwise arithmetic with numpy/torch broadcasting; gradients are summed back to each
// input's shape.
#include "core/tensor.h"

namespace automodel::ops {

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, double factor);  // x * factor

// Shape that a and b broadcast to; an Error naming both shapes when they don't.
Shape broadcast_shapes(const Shape& a, const Shape& b);

}  // namespace automodel::ops

namespace automodel {
inline Tensor operator+(const Tensor& a, const Tensor& b) { return ops::add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return ops::sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return ops::mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return ops::div(a, b); }
inline Tensor operator*(const Tensor& a, double s) { return ops::scale(a, s); }
}  // namespace automodel
