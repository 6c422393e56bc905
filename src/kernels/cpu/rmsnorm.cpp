#include "kernels/cpu/rmsnorm.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/threads.h"
#include "kernels/cpu/row_partials.h"

namespace automodel::cpu {

namespace {

// One row of rmsnorm_forward.
template <class T>
inline void norm_row(const T* xr, const T* w, T* yr, compute_t<T>& rstd, int64_t hidden, compute_t<T> eps,
                     bool unit_offset) {
  using C = compute_t<T>;
  C ss = 0;
#pragma omp simd reduction(+ : ss)
  for (int64_t h = 0; h < hidden; ++h) {
    C v = to_compute(xr[h]);
    ss += v * v;
  }
  const C rs = C(1) / std::sqrt(ss / C(hidden) + eps);
  rstd = rs;
  if (!w) {
#pragma omp simd
    for (int64_t h = 0; h < hidden; ++h) yr[h] = from_compute<T>(to_compute(xr[h]) * rs);
  } else if (unit_offset) {
#pragma omp simd
    for (int64_t h = 0; h < hidden; ++h) yr[h] = from_compute<T>(to_compute(xr[h]) * rs * (C(1) + to_compute(w[h])));
  } else if constexpr (std::is_same_v<T, bf16>) {
    // LlamaRMSNorm: weight * hidden_states.to(bfloat16), the product rounded again.
#pragma omp simd
    for (int64_t h = 0; h < hidden; ++h)
      yr[h] = from_compute<T>(to_compute(from_compute<T>(to_compute(xr[h]) * rs)) * to_compute(w[h]));
  } else {
#pragma omp simd
    for (int64_t h = 0; h < hidden; ++h) yr[h] = from_compute<T>(to_compute(xr[h]) * rs * to_compute(w[h]));
  }
}

int64_t row_grain(int64_t hidden) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(hidden, 1)); }

}  // namespace

template <class T>
void rmsnorm_forward(const T* x, const T* w, T* y, compute_t<T>* rstd, int64_t rows, int64_t hidden, double eps,
                     bool unit_offset) {
  parallel_for(rows, row_grain(hidden), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      norm_row(x + r * hidden, w, y + r * hidden, rstd[r], hidden, compute_t<T>(eps), unit_offset);
  });
}

template <class T>
void add_rmsnorm_forward(const T* x, const T* residual, const T* w, T* sum, T* y, compute_t<T>* rstd, int64_t rows,
                         int64_t hidden, double eps, bool unit_offset) {
  parallel_for(rows, row_grain(hidden), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * hidden;
      const T* rr = residual + r * hidden;
      T* sr = sum + r * hidden;
#pragma omp simd
      for (int64_t h = 0; h < hidden; ++h) sr[h] = from_compute<T>(to_compute(xr[h]) + to_compute(rr[h]));
      norm_row(sr, w, y + r * hidden, rstd[r], hidden, compute_t<T>(eps), unit_offset);
    }
  });
}

template <class T>
void rmsnorm_backward(const T* g, const T* x, const T* w, const compute_t<T>* rstd, T* dx, T* dw, int64_t rows,
                      int64_t hidden, bool unit_offset, const T* dx_add) {
  using C = compute_t<T>;
  const bool want_dw = dw && w;
  const C offset = (w && unit_offset) ? C(1) : C(0);
  const int64_t width = want_dw ? hidden : 0;
  std::vector<C> partial = rows_with_partials<C>(rows, width, hidden, [&](int64_t r, C* acc) {
    const T* gr = g + r * hidden;
    const T* xr = x + r * hidden;
    const C rs = rstd[r];
    if (dx) {
      C dot = 0;
      if (w) {
#pragma omp simd reduction(+ : dot)
        for (int64_t h = 0; h < hidden; ++h) dot += to_compute(gr[h]) * (offset + to_compute(w[h])) * to_compute(xr[h]);
      } else {
#pragma omp simd reduction(+ : dot)
        for (int64_t h = 0; h < hidden; ++h) dot += to_compute(gr[h]) * to_compute(xr[h]);
      }
      const C k = rs * rs * rs * dot / C(hidden);
      T* dxr = dx + r * hidden;
      const T* ar = dx_add ? dx_add + r * hidden : nullptr;
      // One loop per case, so that none carries a branch per element.
      if (w && ar) {
#pragma omp simd
        for (int64_t h = 0; h < hidden; ++h)
          dxr[h] = from_compute<T>(rs * to_compute(gr[h]) * (offset + to_compute(w[h])) - k * to_compute(xr[h]) +
                                   to_compute(ar[h]));
      } else if (w) {
#pragma omp simd
        for (int64_t h = 0; h < hidden; ++h)
          dxr[h] = from_compute<T>(rs * to_compute(gr[h]) * (offset + to_compute(w[h])) - k * to_compute(xr[h]));
      } else if (ar) {
#pragma omp simd
        for (int64_t h = 0; h < hidden; ++h)
          dxr[h] = from_compute<T>(rs * to_compute(gr[h]) - k * to_compute(xr[h]) + to_compute(ar[h]));
      } else {
#pragma omp simd
        for (int64_t h = 0; h < hidden; ++h) dxr[h] = from_compute<T>(rs * to_compute(gr[h]) - k * to_compute(xr[h]));
      }
    }
    if (acc) {
#pragma omp simd
      for (int64_t h = 0; h < hidden; ++h) acc[h] += to_compute(gr[h]) * to_compute(xr[h]) * rs;
    }
  });
  if (want_dw) reduce_partials(partial, width, 0, hidden, dw);
}

#define AM_RMSNORM_INSTANTIATE(T)                                                                                      \
  template void rmsnorm_forward<T>(const T*, const T*, T*, compute_t<T>*, int64_t, int64_t, double, bool);             \
  template void add_rmsnorm_forward<T>(const T*, const T*, const T*, T*, T*, compute_t<T>*, int64_t, int64_t, double,  \
                                       bool);                                                                          \
  template void rmsnorm_backward<T>(const T*, const T*, const T*, const compute_t<T>*, T*, T*, int64_t, int64_t, bool, \
                                    const T*);
AM_RMSNORM_INSTANTIATE(float)
AM_RMSNORM_INSTANTIATE(double)
AM_RMSNORM_INSTANTIATE(bf16)
#undef AM_RMSNORM_INSTANTIATE

}  // namespace automodel::cpu
