#include "kernels/cpu/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/threads.h"
#include "kernels/cpu/fast_math.h"

namespace automodel::cpu {

namespace {

constexpr int64_t kGrain = 1 << 14;  // elements below which a loop stays serial
constexpr int64_t kBlock = 1024;     // elements summed in compute type before adding into double
constexpr int64_t kCols = 128;       // columns processed together when inner > 1

// sum of f(i) for i < n: vector partial sums in the compute type per block, blocks added in double.
template <class C, class F>
inline double blocked_sum(int64_t n, F f) {
  double s = 0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    C bs = 0;
#pragma omp simd reduction(+ : bs)
    for (int64_t i = b; i < e; ++i) bs += f(i);
    s += double(bs);
  }
  return s;
}

// O is T, or float when the backward recomputes a bf16 softmax in fp32.
template <class T, class O>
void row_forward(const T* x, O* y, int64_t n, bool log) {
  using C = compute_t<T>;
  constexpr bool kKeepExp = !std::is_same_v<O, bf16>;  // y can hold exp(x - max) exactly
  C m = -std::numeric_limits<C>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) {
    C v = to_compute(x[i]);
    m = v > m ? v : m;
  }
  if (log) {
    const double s = blocked_sum<C>(n, [=](int64_t i) { return exp_fast(to_compute(x[i]) - m); });
    const C lse = C(std::log(s));
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = from_compute<O>((to_compute(x[i]) - m) - lse);
    return;
  }
  double s;
  if constexpr (kKeepExp) {
    s = blocked_sum<C>(n, [=](int64_t i) {
      C e = exp_fast(to_compute(x[i]) - m);
      y[i] = e;
      return e;
    });
  } else {
    s = blocked_sum<C>(n, [=](int64_t i) { return exp_fast(to_compute(x[i]) - m); });
  }
  const C inv = C(1.0 / s);
  if constexpr (kKeepExp) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = y[i] * inv;
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = from_compute<O>(exp_fast(to_compute(x[i]) - m) * inv);
  }
}

template <class Y, class T>
void row_backward(const Y* y, const T* g, T* gx, int64_t n, bool log) {
  using C = compute_t<T>;
  if (log) {
    const C s = C(blocked_sum<C>(n, [=](int64_t i) { return to_compute(g[i]); }));
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) gx[i] = from_compute<T>(to_compute(g[i]) - exp_fast(to_compute(y[i])) * s);
  } else {
    const C dot = C(blocked_sum<C>(n, [=](int64_t i) { return to_compute(g[i]) * to_compute(y[i]); }));
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) gx[i] = from_compute<T>(to_compute(y[i]) * (to_compute(g[i]) - dot));
  }
}

// Columns [0, w) of one [dim, *] slab (pointers already offset to the first column); xs / ys:
// the distance between consecutive rows of the slab.
template <class T, class O>
void cols_forward(const T* x, int64_t xs, O* y, int64_t ys, int64_t dim, int64_t w, bool log) {
  using C = compute_t<T>;
  C m[kCols];
  double s[kCols];
  for (int64_t j = 0; j < w; ++j) {
    m[j] = -std::numeric_limits<C>::infinity();
    s[j] = 0;
  }
  for (int64_t d = 0; d < dim; ++d) {
    const T* p = x + d * xs;
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) {
      C v = to_compute(p[j]);
      m[j] = v > m[j] ? v : m[j];
    }
  }
  for (int64_t d = 0; d < dim; ++d) {
    const T* p = x + d * xs;
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) s[j] += double(exp_fast(to_compute(p[j]) - m[j]));
  }
  C f[kCols];  // log: log-sum; else: 1 / sum
  for (int64_t j = 0; j < w; ++j) f[j] = log ? C(std::log(s[j])) : C(1.0 / s[j]);
  for (int64_t d = 0; d < dim; ++d) {
    const T* p = x + d * xs;
    O* q = y + d * ys;
    if (log) {
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) q[j] = from_compute<O>((to_compute(p[j]) - m[j]) - f[j]);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) q[j] = from_compute<O>(exp_fast(to_compute(p[j]) - m[j]) * f[j]);
    }
  }
}

template <class Y, class T>
void cols_backward(const Y* y, int64_t ys, const T* g, T* gx, int64_t gs, int64_t dim, int64_t w, bool log) {
  using C = compute_t<T>;
  double s[kCols];
  for (int64_t j = 0; j < w; ++j) s[j] = 0;
  for (int64_t d = 0; d < dim; ++d) {
    const T* gp = g + d * gs;
    const Y* yp = y + d * ys;
    if (log) {
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) s[j] += double(to_compute(gp[j]));
    } else {
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) s[j] += double(to_compute(gp[j]) * to_compute(yp[j]));
    }
  }
  C sc[kCols];
  for (int64_t j = 0; j < w; ++j) sc[j] = C(s[j]);
  for (int64_t d = 0; d < dim; ++d) {
    const T* gp = g + d * gs;
    const Y* yp = y + d * ys;
    T* q = gx + d * gs;
    if (log) {
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) q[j] = from_compute<T>(to_compute(gp[j]) - exp_fast(to_compute(yp[j])) * sc[j]);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) q[j] = from_compute<T>(to_compute(yp[j]) * (to_compute(gp[j]) - sc[j]));
    }
  }
}

template <class T>
void forward_impl(const T* x, T* y, int64_t outer, int64_t dim, int64_t inner, bool log) {
  if (outer == 0 || dim == 0 || inner == 0) return;
  if (inner == 1) {
    parallel_for(outer, std::max<int64_t>(1, kGrain / dim), [&](int64_t begin, int64_t end) {
      if constexpr (std::is_same_v<T, bf16>) {
        // exp computed once into an fp32 row (L2-resident), then rounded to bf16.
        std::vector<float> row(static_cast<size_t>(dim));
        for (int64_t o = begin; o < end; ++o) {
          row_forward(x + o * dim, row.data(), dim, log);
          T* q = y + o * dim;
#pragma omp simd
          for (int64_t i = 0; i < dim; ++i) q[i] = from_compute<T>(row[size_t(i)]);
        }
      } else {
        for (int64_t o = begin; o < end; ++o) row_forward(x + o * dim, y + o * dim, dim, log);
      }
    });
    return;
  }
  const int64_t nb = (inner + kCols - 1) / kCols;
  parallel_for(outer * nb, std::max<int64_t>(1, kGrain / (dim * std::min(inner, kCols))),
               [&](int64_t begin, int64_t end) {
                 for (int64_t it = begin; it < end; ++it) {
                   int64_t o = it / nb, j0 = (it % nb) * kCols;
                   int64_t off = o * dim * inner + j0;
                   cols_forward(x + off, inner, y + off, inner, dim, std::min(kCols, inner - j0), log);
                 }
               });
}

template <class T>
void backward_impl(const T* y, const T* g, T* gx, int64_t outer, int64_t dim, int64_t inner, bool log) {
  if (outer == 0 || dim == 0 || inner == 0) return;
  if (inner == 1) {
    parallel_for(outer, std::max<int64_t>(1, kGrain / dim), [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) row_backward(y + o * dim, g + o * dim, gx + o * dim, dim, log);
    });
    return;
  }
  const int64_t nb = (inner + kCols - 1) / kCols;
  parallel_for(outer * nb, std::max<int64_t>(1, kGrain / (dim * std::min(inner, kCols))),
               [&](int64_t begin, int64_t end) {
                 for (int64_t it = begin; it < end; ++it) {
                   int64_t o = it / nb, j0 = (it % nb) * kCols;
                   int64_t off = o * dim * inner + j0;
                   cols_backward(y + off, inner, g + off, gx + off, inner, dim, std::min(kCols, inner - j0), log);
                 }
               });
}

// Backward from the input: the softmax is recomputed in fp32 one row / column block at a time.
template <class T>
void backward_recompute_impl(const T* x, const T* g, T* gx, int64_t outer, int64_t dim, int64_t inner, bool log) {
  if (outer == 0 || dim == 0 || inner == 0) return;
  if (inner == 1) {
    parallel_for(outer, std::max<int64_t>(1, kGrain / dim), [&](int64_t begin, int64_t end) {
      std::vector<float> y(static_cast<size_t>(dim));
      for (int64_t o = begin; o < end; ++o) {
        row_forward(x + o * dim, y.data(), dim, log);
        row_backward(y.data(), g + o * dim, gx + o * dim, dim, log);
      }
    });
    return;
  }
  const int64_t nb = (inner + kCols - 1) / kCols;
  parallel_for(outer * nb, std::max<int64_t>(1, kGrain / (dim * std::min(inner, kCols))),
               [&](int64_t begin, int64_t end) {
                 std::vector<float> y(static_cast<size_t>(dim * kCols));
                 for (int64_t it = begin; it < end; ++it) {
                   int64_t o = it / nb, j0 = (it % nb) * kCols, w = std::min(kCols, inner - j0);
                   int64_t off = o * dim * inner + j0;
                   cols_forward(x + off, inner, y.data(), kCols, dim, w, log);  // y: [dim, kCols]
                   cols_backward(y.data(), kCols, g + off, gx + off, inner, dim, w, log);
                 }
               });
}

}  // namespace

void softmax_forward(const float* x, float* y, int64_t outer, int64_t dim, int64_t inner, bool log) {
  forward_impl(x, y, outer, dim, inner, log);
}
void softmax_forward(const double* x, double* y, int64_t outer, int64_t dim, int64_t inner, bool log) {
  forward_impl(x, y, outer, dim, inner, log);
}
void softmax_forward(const bf16* x, bf16* y, int64_t outer, int64_t dim, int64_t inner, bool log) {
  forward_impl(x, y, outer, dim, inner, log);
}
void softmax_backward(const float* y, const float* g, float* gx, int64_t outer, int64_t dim, int64_t inner, bool log) {
  backward_impl(y, g, gx, outer, dim, inner, log);
}
void softmax_backward(const double* y, const double* g, double* gx, int64_t outer, int64_t dim, int64_t inner,
                      bool log) {
  backward_impl(y, g, gx, outer, dim, inner, log);
}
void softmax_backward(const bf16* y, const bf16* g, bf16* gx, int64_t outer, int64_t dim, int64_t inner, bool log) {
  backward_impl(y, g, gx, outer, dim, inner, log);
}
void softmax_backward_from_input(const bf16* x, const bf16* g, bf16* gx, int64_t outer, int64_t dim, int64_t inner,
                                 bool log) {
  backward_recompute_impl(x, g, gx, outer, dim, inner, log);
}

}  // namespace automodel::cpu
