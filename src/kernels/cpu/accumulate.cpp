#include "kernels/cpu/accumulate.h"

#include <algorithm>

#include "core/threads.h"
#include "kernels/cpu/cast.h"

namespace automodel::cpu {

namespace {

constexpr int64_t kGrain = 1 << 15;

template <class T>
void add_impl(const T* a, const T* b, T* out, int64_t n) {
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = a[i] + b[i];
  });
}

}  // namespace

void add_same_shape(const float* a, const float* b, float* out, int64_t n) { add_impl(a, b, out, n); }
void add_same_shape(const double* a, const double* b, double* out, int64_t n) { add_impl(a, b, out, n); }

// Through fp32 blocks so that the conversions run vectorised (cast.cpp); each element is still rounded once, as
// from_compute(to_compute(a) + to_compute(b)) would.
void add_same_shape(const bf16* a, const bf16* b, bf16* out, int64_t n) {
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    constexpr int64_t kBlock = 512;
    float fa[kBlock], fb[kBlock];
    for (int64_t i = begin; i < end; i += kBlock) {
      const int64_t m = std::min(kBlock, end - i);
      cast(a + i, fa, m);
      cast(b + i, fb, m);
      for (int64_t k = 0; k < m; ++k) fa[k] += fb[k];
      cast(fa, out + i, m);
    }
  });
}

}  // namespace automodel::cpu
