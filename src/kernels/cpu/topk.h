#pragma once
// Top-k along the last dimension of a [rows, cols] matrix (torch.topk(x, k, dim=-1), largest, sorted) and the
// scatter of the values' gradient back to the chosen columns.
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

// values[r, j], indices[r, j] for j < k: the k largest entries of row r, largest first; equal values keep their
// column order (the lower column first). NaN counts as the largest value, as in torch. T is float, double or bf16.
template <class T>
void topk_forward(const T* x, int64_t rows, int64_t cols, int64_t k, T* values, int64_t* indices);

// gx[r, indices[r, j]] = g[r, j]; every other entry of gx is zero. Writes all of gx.
template <class T>
void topk_backward(const T* g, const int64_t* indices, int64_t rows, int64_t cols, int64_t k, T* gx);

}  // namespace automodel::cpu
