#include "kernels/cpu/grouped_gemm.h"

#include <cstring>

#include "kernels/cpu/gemm.h"

namespace automodel::cpu {

namespace {

// The GEMM overload whose output type is the storage type (bf16 rounds once, at the end).
template <class T>
using scalar_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

}  // namespace

template <class T>
void grouped_gemm_forward(const T* x, const T* w, const int64_t* counts, int64_t groups, int64_t n, int64_t k,
                          bool w_transposed, T* y) {
  int64_t row = 0;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t m = counts[g];
    if (m > 0)
      gemm(false, !w_transposed, m, n, k, scalar_t<T>(1), x + row * k, k, w + g * n * k, w_transposed ? n : k,
           scalar_t<T>(0), y + row * n, n);
    row += m;
  }
}

template <class T>
void grouped_gemm_backward(const T* grad, const T* x, const T* w, const int64_t* counts, int64_t groups, int64_t n,
                           int64_t k, bool w_transposed, T* dx, T* dw) {
  int64_t row = 0;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t m = counts[g];
    T* dw_g = dw ? dw + g * n * k : nullptr;
    if (m == 0) {
      if (dw_g) std::memset(static_cast<void*>(dw_g), 0, size_t(n * k) * sizeof(T));
      continue;
    }
    if (dx)
      gemm(false, w_transposed, m, k, n, scalar_t<T>(1), grad + row * n, n, w + g * n * k, w_transposed ? n : k,
           scalar_t<T>(0), dx + row * k, k);
    if (dw_g && w_transposed)  // dw[g] [k, n] = x^T grad
      gemm(true, false, k, n, m, scalar_t<T>(1), x + row * k, k, grad + row * n, n, scalar_t<T>(0), dw_g, n);
    else if (dw_g)
      gemm(true, false, n, k, m, scalar_t<T>(1), grad + row * n, n, x + row * k, k, scalar_t<T>(0), dw_g, k);
    row += m;
  }
}

#define AUTOMODEL_GROUPED_GEMM(T)                                                                                 \
  template void grouped_gemm_forward<T>(const T*, const T*, const int64_t*, int64_t, int64_t, int64_t, bool, T*); \
  template void grouped_gemm_backward<T>(const T*, const T*, const T*, const int64_t*, int64_t, int64_t, int64_t, \
                                         bool, T*, T*);
AUTOMODEL_GROUPED_GEMM(float)
AUTOMODEL_GROUPED_GEMM(double)
AUTOMODEL_GROUPED_GEMM(bf16)
#undef AUTOMODEL_GROUPED_GEMM

}  // namespace automodel::cpu
