#include "kernels/cpu/clamped_swiglu.h"

#include <algorithm>

#include "core/threads.h"
#include "kernels/cpu/fast_math.h"

namespace automodel::cpu {

namespace {

constexpr int64_t kGrain = 1 << 13;  // outputs below which a loop stays serial

template <class T>
void forward(const T* gate_up, T* y, int64_t n, double alpha_d, double limit_d) {
  using C = compute_t<T>;
  const C alpha = C(alpha_d), limit = C(limit_d);
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const C gate = std::min(C(to_compute(gate_up[2 * i])), limit);
      const C up = std::clamp(C(to_compute(gate_up[2 * i + 1])), -limit, limit);
      const C glu = gate / (C(1) + exp_fast(-alpha * gate));
      y[i] = from_compute<T>((up + C(1)) * glu);
    }
  });
}

template <class T>
void backward(const T* gate_up, const T* g, T* dgate_up, int64_t n, double alpha_d, double limit_d) {
  using C = compute_t<T>;
  const C alpha = C(alpha_d), limit = C(limit_d);
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const C gate_in = C(to_compute(gate_up[2 * i])), up_in = C(to_compute(gate_up[2 * i + 1]));
      const C gate = std::min(gate_in, limit), up = std::clamp(up_in, -limit, limit);
      const C s = C(1) / (C(1) + exp_fast(-alpha * gate));
      const C glu = gate * s, dglu = s + gate * alpha * s * (C(1) - s);
      const C dy = C(to_compute(g[i]));
      dgate_up[2 * i] = from_compute<T>(gate_in <= limit ? dy * (up + C(1)) * dglu : C(0));
      dgate_up[2 * i + 1] = from_compute<T>(up_in >= -limit && up_in <= limit ? dy * glu : C(0));
    }
  });
}

}  // namespace

#define AM_CLAMPED_SWIGLU_INSTANTIATE(T)                                                                           \
  void clamped_swiglu_forward(const T* gate_up, T* y, int64_t n, double alpha, double limit) {                     \
    forward(gate_up, y, n, alpha, limit);                                                                          \
  }                                                                                                                \
  void clamped_swiglu_backward(const T* gate_up, const T* g, T* dgate_up, int64_t n, double alpha, double limit) { \
    backward(gate_up, g, dgate_up, n, alpha, limit);                                                               \
  }

AM_CLAMPED_SWIGLU_INSTANTIATE(float)
AM_CLAMPED_SWIGLU_INSTANTIATE(double)
AM_CLAMPED_SWIGLU_INSTANTIATE(bf16)
#undef AM_CLAMPED_SWIGLU_INSTANTIATE

}  // namespace automodel::cpu
