#include "kernels/cpu/rmsnorm.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/threads.h"
#include "kernels/cpu/row_partials.h"

namespace automodel::cpu {

template <class T>
void rmsnorm_forward(const T* x, const T* w, T* y, compute_t<T>* rstd, int64_t rows, int64_t hidden, double eps,
                     bool unit_offset) {
  using C = compute_t<T>;
  const C ceps = C(eps);
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(hidden, 1));
  parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * hidden;
      T* yr = y + r * hidden;
      C ss = 0;
#pragma omp simd reduction(+ : ss)
      for (int64_t h = 0; h < hidden; ++h) {
        C v = to_compute(xr[h]);
        ss += v * v;
      }
      const C rs = C(1) / std::sqrt(ss / C(hidden) + ceps);
      rstd[r] = rs;
      if (!w) {
#pragma omp simd
        for (int64_t h = 0; h < hidden; ++h) yr[h] = from_compute<T>(to_compute(xr[h]) * rs);
      } else if (unit_offset) {
#pragma omp simd
        for (int64_t h = 0; h < hidden; ++h)
          yr[h] = from_compute<T>(to_compute(xr[h]) * rs * (C(1) + to_compute(w[h])));
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
  });
}

template <class T>
void rmsnorm_backward(const T* g, const T* x, const T* w, const compute_t<T>* rstd, T* dx, T* dw, int64_t rows,
                      int64_t hidden, bool unit_offset) {
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
      if (w) {
#pragma omp simd
        for (int64_t h = 0; h < hidden; ++h)
          dxr[h] = from_compute<T>(rs * to_compute(gr[h]) * (offset + to_compute(w[h])) - k * to_compute(xr[h]));
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

#define AM_RMSNORM_INSTANTIATE(T)                                                                          \
  template void rmsnorm_forward<T>(const T*, const T*, T*, compute_t<T>*, int64_t, int64_t, double, bool); \
  template void rmsnorm_backward<T>(const T*, const T*, const T*, const compute_t<T>*, T*, T*, int64_t, int64_t, bool);
AM_RMSNORM_INSTANTIATE(float)
AM_RMSNORM_INSTANTIATE(double)
AM_RMSNORM_INSTANTIATE(bf16)
#undef AM_RMSNORM_INSTANTIATE

}  // namespace automodel::cpu
