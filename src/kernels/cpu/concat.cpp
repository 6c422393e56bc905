#include "kernels/cpu/concat.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/threads.h"

namespace automodel::cpu {

namespace {

constexpr int64_t kCopyChunk = 1 << 16;  // bytes one task copies at most
constexpr int64_t kGrain = 1 << 14;      // elements below which a loop stays serial

// Copies row pieces between the joined tensor and the pieces; to_joined picks the direction.
void copy_pieces(char* joined, char* const* pieces, const int64_t* sizes, int n, int64_t outer, int64_t inner,
                 size_t elem_size, bool to_joined) {
  const int64_t es = int64_t(elem_size);
  int64_t total = 0;
  std::vector<int64_t> offset(static_cast<size_t>(n)), nch(static_cast<size_t>(n)), first(size_t(n) + 1, 0);
  for (int k = 0; k < n; ++k) {
    offset[size_t(k)] = total;
    total += sizes[k];
    int64_t bytes = sizes[k] * inner * es;
    nch[size_t(k)] = std::max<int64_t>(1, (bytes + kCopyChunk - 1) / kCopyChunk);
    first[size_t(k) + 1] = first[size_t(k)] + nch[size_t(k)];
  }
  const int64_t per_row = first[size_t(n)];
  parallel_for(outer * per_row, 4, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      int64_t o = it / per_row, r = it % per_row;
      int k = int(std::upper_bound(first.begin(), first.end(), r) - first.begin()) - 1;
      if (!pieces[k]) continue;
      int64_t c = r - first[size_t(k)];
      int64_t bytes = sizes[k] * inner * es;
      int64_t b0 = c * kCopyChunk, len = std::min(kCopyChunk, bytes - b0);
      if (len <= 0) continue;
      char* j = joined + (o * total + offset[size_t(k)]) * inner * es + b0;
      char* p = pieces[k] + o * bytes + b0;
      if (to_joined)
        std::memcpy(j, p, size_t(len));
      else
        std::memcpy(p, j, size_t(len));
    }
  });
}

template <class E>
void gather_rows(const E* x, const int64_t* xs, const int64_t* index, E* out, const int64_t* shape, int ndim, int dim) {
  int64_t total = 1;
  for (int d = 0; d < ndim; ++d) total *= shape[d];
  if (total == 0) return;
  const int64_t inner = shape[ndim - 1];
  const int64_t rows = total / inner;
  const int64_t xs_dim = xs[dim], xs_last = xs[ndim - 1];
  const bool last = dim == ndim - 1;
  parallel_for(rows, std::max<int64_t>(1, kGrain / inner), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      int64_t rem = r, base = 0;
      for (int d = ndim - 2; d >= 0; --d) {
        int64_t i = rem % shape[d];
        rem /= shape[d];
        if (d != dim) base += i * xs[d];
      }
      const int64_t* ip = index + r * inner;
      E* op = out + r * inner;
      if (last) {
        for (int64_t c = 0; c < inner; ++c) op[c] = x[base + ip[c]];
      } else {
        for (int64_t c = 0; c < inner; ++c) op[c] = x[base + c * xs_last + ip[c] * xs_dim];
      }
    }
  });
}

// Lines along `dim` are independent (no two write the same gx element), so threads split lines.
template <class T>
void scatter_add_lines(const T* g, const int64_t* index, T* gx, const int64_t* gs, const int64_t* shape, int ndim,
                       int dim) {
  int64_t total = 1;
  for (int d = 0; d < ndim; ++d) total *= shape[d];
  if (total == 0) return;
  const int64_t J = shape[dim];
  const int64_t lines = total / J;
  int64_t is_dim = 1;
  for (int d = ndim - 1; d > dim; --d) is_dim *= shape[d];
  const int64_t gs_dim = gs[dim];
  parallel_for(lines, std::max<int64_t>(1, kGrain / J), [&](int64_t begin, int64_t end) {
    for (int64_t l = begin; l < end; ++l) {
      int64_t rem = l, gbase = 0, ibase = 0, istride = 1;
      for (int d = ndim - 1; d >= 0; --d) {
        if (d == dim) {
          istride *= shape[d];
          continue;
        }
        int64_t i = rem % shape[d];
        rem /= shape[d];
        gbase += i * gs[d];
        ibase += i * istride;
        istride *= shape[d];
      }
      for (int64_t j = 0; j < J; ++j) {
        int64_t p = ibase + j * is_dim;
        T& dst = gx[gbase + index[p] * gs_dim];
        dst = from_compute<T>(to_compute(dst) + to_compute(g[p]));
      }
    }
  });
}

}  // namespace

void concat_forward(const void* const* srcs, const int64_t* sizes, int n, void* dst, int64_t outer, int64_t inner,
                    size_t elem_size) {
  std::vector<char*> pieces(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) pieces[size_t(k)] = const_cast<char*>(static_cast<const char*>(srcs[k]));
  copy_pieces(static_cast<char*>(dst), pieces.data(), sizes, n, outer, inner, elem_size, true);
}

void concat_backward(const void* src, const int64_t* sizes, int n, void* const* dsts, int64_t outer, int64_t inner,
                     size_t elem_size) {
  std::vector<char*> pieces(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) pieces[size_t(k)] = static_cast<char*>(dsts[k]);
  copy_pieces(const_cast<char*>(static_cast<const char*>(src)), pieces.data(), sizes, n, outer, inner, elem_size,
              false);
}

void gather_forward(const void* x, const int64_t* x_strides, const int64_t* index, void* out,
                    const int64_t* index_shape, int ndim, int dim, size_t elem_size) {
  switch (elem_size) {
    case 1:
      gather_rows(static_cast<const uint8_t*>(x), x_strides, index, static_cast<uint8_t*>(out), index_shape, ndim, dim);
      return;
    case 2:
      gather_rows(static_cast<const uint16_t*>(x), x_strides, index, static_cast<uint16_t*>(out), index_shape, ndim,
                  dim);
      return;
    case 4:
      gather_rows(static_cast<const uint32_t*>(x), x_strides, index, static_cast<uint32_t*>(out), index_shape, ndim,
                  dim);
      return;
    default:
      gather_rows(static_cast<const uint64_t*>(x), x_strides, index, static_cast<uint64_t*>(out), index_shape, ndim,
                  dim);
      return;
  }
}

void gather_backward(const float* g, const int64_t* index, float* gx, const int64_t* gs, int64_t gx_numel,
                     const int64_t* shape, int ndim, int dim) {
  std::fill(gx, gx + gx_numel, 0.0f);
  scatter_add_lines(g, index, gx, gs, shape, ndim, dim);
}
void gather_backward(const double* g, const int64_t* index, double* gx, const int64_t* gs, int64_t gx_numel,
                     const int64_t* shape, int ndim, int dim) {
  std::fill(gx, gx + gx_numel, 0.0);
  scatter_add_lines(g, index, gx, gs, shape, ndim, dim);
}
void gather_backward(const bf16* g, const int64_t* index, bf16* gx, const int64_t* gs, int64_t gx_numel,
                     const int64_t* shape, int ndim, int dim) {
  // Repeated indices accumulate in fp32; each gx element is rounded to bf16 once.
  int64_t total = 1;
  for (int d = 0; d < ndim; ++d) total *= shape[d];
  std::vector<float> gf(static_cast<size_t>(total)), acc(static_cast<size_t>(gx_numel), 0.0f);
  for (int64_t i = 0; i < total; ++i) gf[size_t(i)] = bf16_to_float(g[i]);
  scatter_add_lines(gf.data(), index, acc.data(), gs, shape, ndim, dim);
  for (int64_t i = 0; i < gx_numel; ++i) gx[i] = float_to_bf16(acc[size_t(i)]);
}

}  // namespace automodel::cpu
