#include "kernels/cpu/layernorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/threads.h"
#include "kernels/cpu/row_partials.h"

namespace automodel::cpu {

template <class T>
void layernorm_forward(const T* x, const T* w, const T* b, T* y, compute_t<T>* mean, compute_t<T>* rstd, int64_t rows,
                       int64_t hidden, double eps) {
  using C = compute_t<T>;
  const C ceps = C(eps);
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(hidden, 1));
  parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * hidden;
      T* yr = y + r * hidden;
      C s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t h = 0; h < hidden; ++h) s += to_compute(xr[h]);
      const C m = s / C(hidden);
      C ss = 0;
#pragma omp simd reduction(+ : ss)
      for (int64_t h = 0; h < hidden; ++h) {
        C d = to_compute(xr[h]) - m;
        ss += d * d;
      }
      const C rs = C(1) / std::sqrt(ss / C(hidden) + ceps);
      mean[r] = m;
      rstd[r] = rs;
#pragma omp simd
      for (int64_t h = 0; h < hidden; ++h) {
        C v = (to_compute(xr[h]) - m) * rs;
        if (w) v *= to_compute(w[h]);
        if (b) v += to_compute(b[h]);
        yr[h] = from_compute<T>(v);
      }
    }
  });
}

template <class T>
void layernorm_backward(const T* g, const T* x, const T* w, const compute_t<T>* mean, const compute_t<T>* rstd, T* dx,
                        T* dw, T* db, int64_t rows, int64_t hidden) {
  using C = compute_t<T>;
  const int64_t dw_off = 0, db_off = dw ? hidden : 0;
  const int64_t width = (dw ? hidden : 0) + (db ? hidden : 0);
  std::vector<C> partial = rows_with_partials<C>(rows, width, hidden, [&](int64_t r, C* acc) {
    const T* gr = g + r * hidden;
    const T* xr = x + r * hidden;
    const C m = mean[r], rs = rstd[r];
    if (dx) {
      C s1 = 0, s2 = 0;  // sum(g * w), sum(g * w * xhat)
#pragma omp simd reduction(+ : s1, s2)
      for (int64_t h = 0; h < hidden; ++h) {
        C gw = to_compute(gr[h]);
        if (w) gw *= to_compute(w[h]);
        s1 += gw;
        s2 += gw * (to_compute(xr[h]) - m) * rs;
      }
      const C a = s1 / C(hidden), c = s2 / C(hidden);
      T* dxr = dx + r * hidden;
#pragma omp simd
      for (int64_t h = 0; h < hidden; ++h) {
        C gw = to_compute(gr[h]);
        if (w) gw *= to_compute(w[h]);
        const C xhat = (to_compute(xr[h]) - m) * rs;
        dxr[h] = from_compute<T>(rs * (gw - a - xhat * c));
      }
    }
    if (dw) {
      C* pw = acc + dw_off;
#pragma omp simd
      for (int64_t h = 0; h < hidden; ++h) pw[h] += to_compute(gr[h]) * (to_compute(xr[h]) - m) * rs;
    }
    if (db) {
      C* pb = acc + db_off;
#pragma omp simd
      for (int64_t h = 0; h < hidden; ++h) pb[h] += to_compute(gr[h]);
    }
  });
  if (dw) reduce_partials(partial, width, dw_off, hidden, dw);
  if (db) reduce_partials(partial, width, db_off, hidden, db);
}

#define AM_LAYERNORM_INSTANTIATE(T)                                                                                    \
  template void layernorm_forward<T>(const T*, const T*, const T*, T*, compute_t<T>*, compute_t<T>*, int64_t, int64_t, \
                                     double);                                                                          \
  template void layernorm_backward<T>(const T*, const T*, const T*, const compute_t<T>*, const compute_t<T>*, T*, T*,  \
                                      T*, int64_t, int64_t);
AM_LAYERNORM_INSTANTIATE(float)
AM_LAYERNORM_INSTANTIATE(double)
AM_LAYERNORM_INSTANTIATE(bf16)
#undef AM_LAYERNORM_INSTANTIATE

}  // namespace automodel::cpu
