#include "kernels/cpu/copy.h"

#include <cstring>
#include <vector>

#include "core/threads.h"

namespace automodel::cpu {

namespace {
struct Dim {
  int64_t size, src_stride, dst_stride;
};

// Drops size-1 dims and merges dims that are contiguous in both tensors.
std::vector<Dim> coalesce(const int64_t* src_strides, const int64_t* dst_strides, const int64_t* shape, int ndim) {
  std::vector<Dim> dims;
  for (int i = 0; i < ndim; ++i) {
    if (shape[i] == 1) continue;
    Dim d{shape[i], src_strides[i], dst_strides[i]};
    if (!dims.empty()) {
      Dim& prev = dims.back();
      if (prev.src_stride == d.src_stride * d.size && prev.dst_stride == d.dst_stride * d.size) {
        prev = {prev.size * d.size, d.src_stride, d.dst_stride};
        continue;
      }
    }
    dims.push_back(d);
  }
  if (dims.empty()) dims.push_back({1, 1, 1});
  return dims;
}
}  // namespace

void strided_copy(const void* src, const int64_t* src_strides, void* dst, const int64_t* dst_strides,
                  const int64_t* shape, int ndim, size_t elem_size) {
  for (int i = 0; i < ndim; ++i)
    if (shape[i] == 0) return;
  std::vector<Dim> dims = coalesce(src_strides, dst_strides, shape, ndim);
  const Dim inner = dims.back();
  dims.pop_back();
  int64_t outer = 1;
  for (const Dim& d : dims) outer *= d.size;
  const char* s = static_cast<const char*>(src);
  char* t = static_cast<char*>(dst);
  const int64_t es = int64_t(elem_size);
  const bool inner_contiguous = inner.src_stride == 1 && inner.dst_stride == 1;
  parallel_for(outer, inner.size >= 4096 ? 1 : 4096 / (inner.size + 1) + 1, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      int64_t rem = o, so = 0, to = 0;
      for (size_t d = dims.size(); d-- > 0;) {
        int64_t i = rem % dims[d].size;
        rem /= dims[d].size;
        so += i * dims[d].src_stride;
        to += i * dims[d].dst_stride;
      }
      const char* sp = s + so * es;
      char* tp = t + to * es;
      if (inner_contiguous) {
        std::memcpy(tp, sp, size_t(inner.size * es));
      } else {
        for (int64_t i = 0; i < inner.size; ++i)
          std::memcpy(tp + i * inner.dst_stride * es, sp + i * inner.src_stride * es, elem_size);
      }
    }
  });
}

}  // namespace automodel::cpu
