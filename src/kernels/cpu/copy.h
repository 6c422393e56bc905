#pragma once
// Strided element copy for any element size: the kernel behind contiguous() and slice assignment.
#include <cstddef>
#include <cstdint>

namespace automodel::cpu {

// Copies a tensor of `shape` from src (strides in elements) to dst (strides in elements).
void strided_copy(const void* src, const int64_t* src_strides, void* dst, const int64_t* dst_strides,
                  const int64_t* shape, int ndim, size_t elem_size);

}  // namespace automodel::cpu
