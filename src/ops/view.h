#pragma once
// Differentiable views and layout changes. Views share storage with their input (no copy);
// reshape copies only when the layout makes a view impossible.
#include <vector>

#include "core/tensor.h"

namespace automodel::ops {

Tensor contiguous(const Tensor& x);            // x itself when already contiguous
Tensor clone(const Tensor& x);                 // always a fresh contiguous copy
Tensor reshape(const Tensor& x, Shape shape);  // one dim may be -1
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
// Elements start, start+step, ... < end along dim (end clamped to the size; negative start/end
// count from the end).
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);

// Copies src into dst (same shape; dst may be a strided view). No autograd.
void copy_into(const Tensor& dst, const Tensor& src);

}  // namespace automodel::ops
