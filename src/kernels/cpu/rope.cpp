#include "kernels/cpu/rope.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/threads.h"

namespace automodel::cpu {

namespace {

// sign = +1: forward rotation; -1: its transpose (backward).
template <class T>
void rope_apply(const T* x, T* y, const int64_t* pos, const float* inv_freq, const RopeParams& p, int sign) {
  using C = compute_t<T>;
  const int64_t n = p.half_rot, D = p.head_dim, R = 2 * n, H = p.heads;
  const int64_t rows = p.batch * p.seq;
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(H * D, 1));
  parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<C> cs(static_cast<size_t>(n)), sn(static_cast<size_t>(n));
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / p.seq, t = row % p.seq;
      const float fpos = float(pos[b * p.pos_batch_stride + t]);
      for (int64_t i = 0; i < n; ++i) {
        const float angle = fpos * inv_freq[i];  // fp32, as transformers computes the frequencies
        if constexpr (std::is_same_v<C, double>) {
          cs[size_t(i)] = std::cos(double(angle)) * p.attention_scaling;
          sn[size_t(i)] = std::sin(double(angle)) * p.attention_scaling * sign;
        } else {
          const float scale = float(p.attention_scaling);
          // Rounded through T: transformers hands cos / sin to the rotation in the activation dtype.
          cs[size_t(i)] = to_compute(from_compute<T>(std::cos(angle) * scale));
          sn[size_t(i)] = to_compute(from_compute<T>(std::sin(angle) * scale)) * float(sign);
        }
      }
      const C* c = cs.data();
      const C* s = sn.data();
      for (int64_t h = 0; h < H; ++h) {
        const T* xr = x + (row * H + h) * D;
        T* yr = y + (row * H + h) * D;
        if (p.interleaved) {
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) {
            const C a = to_compute(xr[2 * i]), bb = to_compute(xr[2 * i + 1]);
            yr[2 * i] = from_compute<T>(a * c[i] - bb * s[i]);
            yr[2 * i + 1] = from_compute<T>(bb * c[i] + a * s[i]);
          }
        } else {
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) {
            const C a = to_compute(xr[i]), bb = to_compute(xr[i + n]);
            yr[i] = from_compute<T>(a * c[i] - bb * s[i]);
            yr[i + n] = from_compute<T>(bb * c[i] + a * s[i]);
          }
        }
        for (int64_t d = R; d < D; ++d) yr[d] = xr[d];
      }
    }
  });
}

}  // namespace

template <class T>
void rope_forward(const T* x, T* y, const int64_t* pos, const float* inv_freq, const RopeParams& p) {
  rope_apply(x, y, pos, inv_freq, p, +1);
}

template <class T>
void rope_backward(const T* dy, T* dx, const int64_t* pos, const float* inv_freq, const RopeParams& p) {
  rope_apply(dy, dx, pos, inv_freq, p, -1);
}

#define AM_ROPE_INSTANTIATE(T)                                                                  \
  template void rope_forward<T>(const T*, T*, const int64_t*, const float*, const RopeParams&); \
  template void rope_backward<T>(const T*, T*, const int64_t*, const float*, const RopeParams&);
AM_ROPE_INSTANTIATE(float)
AM_ROPE_INSTANTIATE(double)
AM_ROPE_INSTANTIATE(bf16)
#undef AM_ROPE_INSTANTIATE

}  // namespace automodel::cpu
