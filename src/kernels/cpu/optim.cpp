#include "kernels/cpu/optim.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "core/error.h"
#include "kernels/cpu/div_by_reciprocal.h"
#include "kernels/cpu/master_split.h"

namespace automodel::cpu {

namespace {

[[maybe_unused]] constexpr int64_t kGrain = 1 << 14;  // used only by OpenMP pragmas

template <class C>
struct AdamScalars {
  C decay;  // 1 - lr * wd (decoupled)
  C wd;     // L2 (coupled)
  C w1;     // 1 - beta1 (lerp weight)
  C beta2, omb2;
  C bc2_sqrt, bc2_sqrt_recip, eps, neg_step_size;
};

// Decoupled: AdamW's p *= 1 - lr * wd; else Adam's g += wd * p. LerpLo: torch's lerp branch for
// weight < 0.5 (m + w (g - m)), else g - (g - m) (1 - w).
template <bool Decoupled, bool LerpLo, class P, class G, class C>
void adam_kernel(P* __restrict p, const G* __restrict g, C* __restrict m, C* __restrict v, int64_t n,
                 const AdamScalars<C> s) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    C pi = to_compute(p[i]);
    C gi = to_compute(g[i]);
    if constexpr (Decoupled)
      pi = pi * s.decay;
    else
      gi = gi + s.wd * pi;
    C mi = m[i];
    if constexpr (LerpLo)
      mi = mi + s.w1 * (gi - mi);
    else
      mi = gi - (gi - mi) * (C(1) - s.w1);
    const C vi = v[i] * s.beta2 + s.omb2 * gi * gi;
    const C denom = div_by_reciprocal(std::sqrt(vi), s.bc2_sqrt, s.bc2_sqrt_recip) + s.eps;
    pi = pi + s.neg_step_size * mi / denom;
    m[i] = mi;
    v[i] = vi;
    p[i] = from_compute<P>(pi);
  }
}

template <class C>
struct SgdScalars {
  C wd, momentum, omd, neg_lr;
};

// Kind 0: no momentum; 1: momentum, first step (buf = d); 2: momentum (buf = mom buf + (1 - damp) d).
template <bool UseWd, int Kind, bool Nesterov, class P, class G, class C>
void sgd_kernel(P* __restrict p, const G* __restrict g, C* __restrict buf, int64_t n, const SgdScalars<C> s) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const C pi = to_compute(p[i]);
    C d = to_compute(g[i]);
    if constexpr (UseWd) d = d + s.wd * pi;
    if constexpr (Kind != 0) {
      C b;
      if constexpr (Kind == 1)
        b = d;
      else
        b = buf[i] * s.momentum + s.omd * d;
      buf[i] = b;
      if constexpr (Nesterov)
        d = d + s.momentum * b;
      else
        d = b;
    }
    p[i] = from_compute<P>(pi + s.neg_lr * d);
  }
}

// Calls f(std::bool_constant<...>) with a runtime flag turned into a compile-time one.
template <class F>
void with_bool(bool b, F&& f) {
  if (b)
    f(std::true_type{});
  else
    f(std::false_type{});
}

template <class F>
void floating(DType dt, const char* kernel, F&& f) {
  visit_dtype_among<float, double, bf16>(dt, f, [&] {
    throw Error(detail::str(kernel, ": parameters must be f32, f64 or bf16, got ", dtype_name(dt)), kernel);
  });
}

// f(P{}, G{}) for the updated type P (the parameter's, or f32 for its master) and the gradient's G: P / P, or f32 /
// bf16.
template <class F>
void update_types(DType p_dt, DType g_dt, const char* kernel, F&& f) {
  floating(p_dt, kernel, [&](auto tag) {
    using P = decltype(tag);
    if constexpr (std::is_same_v<P, float>) {
      if (g_dt == DType::bf16) return f(P{}, bf16{});
    }
    if (g_dt != p_dt)
      throw Error(detail::str(kernel, ": no update for ", dtype_name(p_dt), " with ", dtype_name(g_dt), " gradients"),
                  kernel);
    f(P{}, P{});
  });
}

template <class G>
void grad_prologue_typed(G* __restrict g, int64_t n, double* sum_sq, bool scale, double coef) {
  if (sum_sq != nullptr) {
    double part = 0.0;
#pragma omp simd reduction(+ : part)
    for (int64_t i = 0; i < n; ++i) {
      const double x = double(to_compute(g[i]));
      part += x * x;
    }
    *sum_sq += part;
  }
  if (scale) {
    using C = compute_t<G>;
    const C c = C(coef);
    for (int64_t i = 0; i < n; ++i) g[i] = from_compute<G>(to_compute(g[i]) * c);
  }
}

}  // namespace

void adam_update(DType p_dt, DType g_dt, const kernels::AdamStep& step, void* p, const void* g, void* m, void* v,
                 int64_t n) {
  update_types(p_dt, g_dt, "adam_update", [&](auto ptag, auto gtag) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    using C = compute_t<P>;
    AdamScalars<C> s;
    s.decay = C(step.decay);
    s.wd = C(step.weight_decay);
    s.w1 = C(step.one_minus_beta1);
    s.beta2 = C(step.beta2);
    s.omb2 = C(step.one_minus_beta2);
    s.bc2_sqrt = C(step.bc2_sqrt);
    s.bc2_sqrt_recip = C(1) / s.bc2_sqrt;
    s.eps = C(step.eps);
    s.neg_step_size = C(step.neg_step_size);
    with_bool(step.decoupled, [&](auto dec) {
      with_bool(std::abs(double(s.w1)) < 0.5, [&](auto lo) {
        adam_kernel<decltype(dec)::value, decltype(lo)::value>(static_cast<P*>(p), static_cast<const G*>(g),
                                                               static_cast<C*>(m), static_cast<C*>(v), n, s);
      });
    });
  });
}

void sgd_update(DType p_dt, DType g_dt, const kernels::SgdStep& step, void* p, const void* g, void* buf, int64_t n) {
  update_types(p_dt, g_dt, "sgd_update", [&](auto ptag, auto gtag) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    using C = compute_t<P>;
    SgdScalars<C> s;
    s.wd = C(step.weight_decay);
    s.momentum = C(step.momentum);
    s.omd = C(step.one_minus_dampening);
    s.neg_lr = C(step.neg_lr);
    P* pp = static_cast<P*>(p);
    const G* gp = static_cast<const G*>(g);
    C* b = static_cast<C*>(buf);
    with_bool(step.weight_decay != 0.0, [&](auto use_wd) {
      with_bool(step.nesterov, [&](auto nest) {
        constexpr bool W = decltype(use_wd)::value, N = decltype(nest)::value;
        if (step.kind == 0)
          sgd_kernel<W, 0, N>(pp, gp, b, n, s);
        else if (step.kind == 1)
          sgd_kernel<W, 1, N>(pp, gp, b, n, s);
        else
          sgd_kernel<W, 2, N>(pp, gp, b, n, s);
      });
    });
  });
}

void grad_prologue(DType dt, void* g, int64_t n, double* sum_sq, bool scale, double coef) {
  floating(dt, "grad_prologue",
           [&](auto tag) { grad_prologue_typed(static_cast<decltype(tag)*>(g), n, sum_sq, scale, coef); });
}

double grad_norm_power(DType dt, const void* g, int64_t n, double norm_type) {
  double result = 0.0;
  floating(dt, "grad_norm_power", [&](auto tag) {
    using P = decltype(tag);
    const P* p = static_cast<const P*>(g);
    double part = 0.0;
    if (std::isinf(norm_type)) {
#pragma omp parallel for simd reduction(max : part) schedule(static) if (n > kGrain)
      for (int64_t i = 0; i < n; ++i) part = std::max(part, std::abs(double(to_compute(p[i]))));
    } else if (norm_type == 2.0) {
#pragma omp parallel for simd reduction(+ : part) schedule(static) if (n > kGrain)
      for (int64_t i = 0; i < n; ++i) {
        double x = double(to_compute(p[i]));
        part += x * x;
      }
    } else {
#pragma omp parallel for simd reduction(+ : part) schedule(static) if (n > kGrain)
      for (int64_t i = 0; i < n; ++i) part += std::pow(std::abs(double(to_compute(p[i]))), norm_type);
    }
    result = part;
  });
  return result;
}

void master_reconstruct(const void* p, const void* r, float* x, int64_t n) {
  master::reconstruct_n(static_cast<const bf16*>(p), static_cast<const uint16_t*>(r), x, n);
}

int64_t master_split(const float* x, void* p, void* r, int64_t n, int64_t* failures) {
  if (master::split_n(x, static_cast<bf16*>(p), static_cast<uint16_t*>(r), n)) return 0;
  int64_t count = 0;
  for (int64_t j = 0; j < n; ++j) {
    uint16_t pj, rj;
    if (!master::split(x[j], pj, rj)) failures[count++] = j;
  }
  return count;
}

void stochastic_round(const float* x, void* p, int64_t n, uint32_t key, int64_t first) {
  master::stochastic_round_n(x, static_cast<bf16*>(p), n, key, first);
}

}  // namespace automodel::cpu
