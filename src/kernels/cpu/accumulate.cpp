#include "kernels/cpu/accumulate.h"

#include "core/threads.h"

namespace automodel::cpu {

template <class T>
static void add_impl(const T* a, const T* b, T* out, int64_t n) {
  parallel_for(n, 1 << 15, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = from_compute<T>(to_compute(a[i]) + to_compute(b[i]));
  });
}

void add_same_shape(const float* a, const float* b, float* out, int64_t n) { add_impl(a, b, out, n); }
void add_same_shape(const double* a, const double* b, double* out, int64_t n) { add_impl(a, b, out, n); }
void add_same_shape(const bf16* a, const bf16* b, bf16* out, int64_t n) { add_impl(a, b, out, n); }

}  // namespace automodel::cpu
