#pragma once
// Joining and splitting contiguous tensors along a dim, and torch.gather with its scatter-add
// backward. Concat / split / gather forward only move elements, so they work for any element size.
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

// dst of shape [outer, sum(sizes), inner] = the n pieces srcs[k] of shape [outer, sizes[k], inner]
// side by side (all contiguous).
void concat_forward(const void* const* srcs, const int64_t* sizes, int n, void* dst, int64_t outer, int64_t inner,
                    size_t elem_size);
// The reverse: src of shape [outer, sum(sizes), inner] cut into contiguous pieces dsts[k] (a null
// dsts[k] is skipped). Also split's forward when copies are wanted.
void concat_backward(const void* src, const int64_t* sizes, int n, void* const* dsts, int64_t outer, int64_t inner,
                     size_t elem_size);

// out[p] = x[p with coordinate `dim` replaced by index[p]] for every position p of `index_shape`.
// x is contiguous with strides x_strides; index and out are contiguous of index_shape; indices are
// already checked to lie in [0, x.size(dim)).
void gather_forward(const void* x, const int64_t* x_strides, const int64_t* index, void* out,
                    const int64_t* index_shape, int ndim, int dim, size_t elem_size);
// gx = 0, then gx[p with dim := index[p]] += g[p] (repeated indices accumulate; bf16 in fp32).
// gx is contiguous with gx_numel elements and strides gx_strides.
void gather_backward(const float* g, const int64_t* index, float* gx, const int64_t* gx_strides, int64_t gx_numel,
                     const int64_t* index_shape, int ndim, int dim);
void gather_backward(const double* g, const int64_t* index, double* gx, const int64_t* gx_strides, int64_t gx_numel,
                     const int64_t* index_shape, int ndim, int dim);
void gather_backward(const bf16* g, const int64_t* index, bf16* gx, const int64_t* gx_strides, int64_t gx_numel,
                     const int64_t* index_shape, int ndim, int dim);

}  // namespace automodel::cpu
