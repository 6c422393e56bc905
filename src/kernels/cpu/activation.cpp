#include "kernels/cpu/activation.h"

#include "core/threads.h"
#include "kernels/cpu/fast_math.h"

namespace automodel::cpu {

namespace {

constexpr int64_t kGrain = 1 << 14;  // elements below which a loop stays serial

template <class C>
inline C sigmoid(C x) {
  return C(1) / (C(1) + exp_fast(-x));
}

// Phi(x) = 0.5 * erfc(-x / sqrt(2)): accurate in the left tail, where 1 + erf(x / sqrt(2)) cancels.
inline float normal_cdf(float x) { return 0.5f * std::erfc(-x * float(M_SQRT1_2)); }
inline double normal_cdf(double x) { return 0.5 * std::erfc(-x * M_SQRT1_2); }

// gelu's tanh form exactly as torch writes it (approximate='tanh'), with its derivative.
template <class C>
inline C gelu_tanh(C x) {
  const C beta = C(M_SQRT2 * M_2_SQRTPI * 0.5), kappa = C(0.044715);
  C inner = beta * (x + kappa * (x * x * x));
  return C(0.5) * x * (C(1) + tanh_fast(inner));
}
template <class C>
inline C gelu_tanh_grad(C x) {
  const C beta = C(M_SQRT2 * M_2_SQRTPI * 0.5), kappa = C(0.044715);
  C x2 = x * x;
  C t = tanh_fast(beta * (x + kappa * (x2 * x)));
  return C(0.5) * (C(1) + t) + C(0.5) * x * (C(1) - t * t) * beta * (C(1) + C(3) * kappa * x2);
}

template <class C>
inline C gelu_erf(C x) {
  return x * normal_cdf(x);
}
template <class C>
inline C gelu_erf_grad(C x) {
  const C alpha = C(M_2_SQRTPI * M_SQRT1_2 * 0.5);  // 1 / sqrt(2 pi)
  return normal_cdf(x) + x * alpha * exp_fast(C(-0.5) * x * x);
}

// y[i] = f(x[i])
template <class T, class F>
void map1(const T* x, T* y, int64_t n, F f) {
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) y[i] = from_compute<T>(f(to_compute(x[i])));
  });
}

// y[i] = f(a[i], b[i])
template <class T, class F>
void map2(const T* a, const T* b, T* y, int64_t n, F f) {
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) y[i] = from_compute<T>(f(to_compute(a[i]), to_compute(b[i])));
  });
}

// gx[i] = g[i] * df(x[i])
template <class T, class DF>
void grad1(const T* x, const T* g, T* gx, int64_t n, DF df) {
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) gx[i] = from_compute<T>(to_compute(g[i]) * df(to_compute(x[i])));
  });
}

// y = act(gate) * up:  d gate = g * up * act'(gate),  d up = g * act(gate).
template <class T, class Both>
void gated_backward(const T* gate, const T* up, const T* g, T* ggate, T* gup, int64_t n, Both both) {
  using C = compute_t<T>;
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    if (ggate && gup) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) {
        C a, da;
        both(to_compute(gate[i]), a, da);
        C gi = to_compute(g[i]);
        ggate[i] = from_compute<T>(gi * to_compute(up[i]) * da);
        gup[i] = from_compute<T>(gi * a);
      }
    } else if (ggate) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) {
        C a, da;
        both(to_compute(gate[i]), a, da);
        ggate[i] = from_compute<T>(to_compute(g[i]) * to_compute(up[i]) * da);
      }
    } else if (gup) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) {
        C a, da;
        both(to_compute(gate[i]), a, da);
        gup[i] = from_compute<T>(to_compute(g[i]) * a);
      }
    }
  });
}

template <class T>
void silu_fwd(const T* x, T* y, int64_t n) {
  map1(x, y, n, [](auto v) { return v * sigmoid(v); });
}
template <class T>
void silu_bwd(const T* x, const T* g, T* gx, int64_t n) {
  grad1(x, g, gx, n, [](auto v) {
    auto s = sigmoid(v);
    return s * (decltype(v)(1) + v * (decltype(v)(1) - s));
  });
}
template <class T>
void gelu_fwd(const T* x, T* y, int64_t n, bool approx) {
  if (approx)
    map1(x, y, n, [](auto v) { return gelu_tanh(v); });
  else
    map1(x, y, n, [](auto v) { return gelu_erf(v); });
}
template <class T>
void gelu_bwd(const T* x, const T* g, T* gx, int64_t n, bool approx) {
  if (approx)
    grad1(x, g, gx, n, [](auto v) { return gelu_tanh_grad(v); });
  else
    grad1(x, g, gx, n, [](auto v) { return gelu_erf_grad(v); });
}
template <class T>
void swiglu_fwd(const T* gate, const T* up, T* y, int64_t n) {
  map2(gate, up, y, n, [](auto a, auto b) { return a * sigmoid(a) * b; });
}
template <class T>
void swiglu_bwd(const T* gate, const T* up, const T* g, T* ggate, T* gup, int64_t n) {
  gated_backward(gate, up, g, ggate, gup, n, [](auto v, auto& a, auto& da) {
    using C = decltype(v);
    C s = sigmoid(v);
    a = v * s;
    da = s * (C(1) + v * (C(1) - s));
  });
}
template <class T>
void geglu_fwd(const T* gate, const T* up, T* y, int64_t n) {
  map2(gate, up, y, n, [](auto a, auto b) { return gelu_tanh(a) * b; });
}
template <class T>
void geglu_bwd(const T* gate, const T* up, const T* g, T* ggate, T* gup, int64_t n) {
  gated_backward(gate, up, g, ggate, gup, n, [](auto v, auto& a, auto& da) {
    using C = decltype(v);
    const C beta = C(M_SQRT2 * M_2_SQRTPI * 0.5), kappa = C(0.044715);
    C v2 = v * v;
    C t = tanh_fast(beta * (v + kappa * (v2 * v)));
    a = C(0.5) * v * (C(1) + t);
    da = C(0.5) * (C(1) + t) + C(0.5) * v * (C(1) - t * t) * beta * (C(1) + C(3) * kappa * v2);
  });
}
template <class T>
void softcap_fwd(const T* x, T* y, int64_t n, double cap) {
  using C = compute_t<T>;
  const C c = C(cap);
  map1(x, y, n, [c](C v) { return c * tanh_fast(v / c); });
}
template <class T>
void softcap_bwd(const T* x, const T* g, T* gx, int64_t n, double cap) {
  using C = compute_t<T>;
  const C c = C(cap);
  grad1(x, g, gx, n, [c](C v) {
    C t = tanh_fast(v / c);
    return C(1) - t * t;
  });
}

template <class T>
void rsqrt_fwd(const T* x, T* y, int64_t n) {
  map1(x, y, n, [](auto v) { return decltype(v)(1) / std::sqrt(v); });
}
template <class T>
void rsqrt_bwd(const T* x, const T* g, T* gx, int64_t n) {
  grad1(x, g, gx, n, [](auto v) { return decltype(v)(-0.5) / (v * std::sqrt(v)); });
}

}  // namespace

#define AM_ACTIVATION_INSTANTIATE(T)                                                                             \
  void silu_forward(const T* x, T* y, int64_t n) { silu_fwd(x, y, n); }                                          \
  void silu_backward(const T* x, const T* g, T* gx, int64_t n) { silu_bwd(x, g, gx, n); }                        \
  void gelu_forward(const T* x, T* y, int64_t n, bool a) { gelu_fwd(x, y, n, a); }                               \
  void gelu_backward(const T* x, const T* g, T* gx, int64_t n, bool a) { gelu_bwd(x, g, gx, n, a); }             \
  void swiglu_forward(const T* gate, const T* up, T* y, int64_t n) { swiglu_fwd(gate, up, y, n); }               \
  void swiglu_backward(const T* gate, const T* up, const T* g, T* ggate, T* gup, int64_t n) {                    \
    swiglu_bwd(gate, up, g, ggate, gup, n);                                                                      \
  }                                                                                                              \
  void geglu_tanh_forward(const T* gate, const T* up, T* y, int64_t n) { geglu_fwd(gate, up, y, n); }            \
  void geglu_tanh_backward(const T* gate, const T* up, const T* g, T* ggate, T* gup, int64_t n) {                \
    geglu_bwd(gate, up, g, ggate, gup, n);                                                                       \
  }                                                                                                              \
  void softcap_forward(const T* x, T* y, int64_t n, double cap) { softcap_fwd(x, y, n, cap); }                   \
  void softcap_backward(const T* x, const T* g, T* gx, int64_t n, double cap) { softcap_bwd(x, g, gx, n, cap); } \
  void rsqrt_forward(const T* x, T* y, int64_t n) { rsqrt_fwd(x, y, n); }                                        \
  void rsqrt_backward(const T* x, const T* g, T* gx, int64_t n) { rsqrt_bwd(x, g, gx, n); }

AM_ACTIVATION_INSTANTIATE(float)
AM_ACTIVATION_INSTANTIATE(double)
AM_ACTIVATION_INSTANTIATE(bf16)
#undef AM_ACTIVATION_INSTANTIATE

}  // namespace automodel::cpu
