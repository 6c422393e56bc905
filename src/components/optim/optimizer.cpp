#include "components/optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/error.h"
#include "core/grad_node.h"
#include "core/threads.h"
#include "kernels/cpu/cast.h"
#include "ops/cast.h"

namespace automodel::optim {

namespace {

constexpr int64_t kGrain = 1 << 14;

template <class F>
void dispatch_param(DType dt, const char* who, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); break;
    case DType::f64: f(double{}); break;
    case DType::bf16: f(bf16{}); break;
    default: AM_CHECK(false, who, ": parameters must be f32, f64 or bf16, got ", dtype_name(dt));
  }
}

std::vector<ParamGroup> one_group(const NamedTensors& params) {
  ParamGroup g;
  g.params = params;
  return {g};
}

DType state_dtype(DType param) { return param == DType::f64 ? DType::f64 : DType::f32; }

// Element-wise kernels: each element depends only on its own inputs, in the same order as torch's
// single-tensor implementation, so the flat-buffer and per-tensor paths agree bit for bit.
template <class C>
struct AdamScalars {
  C decay;  // 1 - lr * wd (decoupled)
  C wd;     // L2 (coupled)
  C w1;     // 1 - beta1 (lerp weight)
  C beta2, omb2;
  C bc2_sqrt, eps, neg_step_size;
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
    const C denom = std::sqrt(vi) / s.bc2_sqrt + s.eps;
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

// Calls f(std::bool_constant<...>...) with runtime flags turned into compile-time ones.
template <class F>
void with_bool(bool b, F&& f) {
  if (b)
    f(std::true_type{});
  else
    f(std::false_type{});
}

// Calls f(P{}, G{}) for the updated tensor's type P (the parameter, or its fp32 master) and the gradient's G.
template <class F>
void dispatch_update(const Tensor& target, const Tensor& grad, const char* who, F&& f) {
  dispatch_param(target.dtype(), who, [&](auto tag) {
    using P = decltype(tag);
    if constexpr (std::is_same_v<P, float>) {
      if (grad.dtype() == DType::bf16) return f(P{}, bf16{});
    }
    f(P{}, P{});
  });
}

void check_unit_tensor(const char* who, const std::string& name, const Tensor& t, const char* what) {
  AM_CHECK(t.is_contiguous(), who, ": ", what, " of parameter '", name, "' (", t.describe(), ") must be contiguous");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Optimizer

Optimizer::Optimizer(std::vector<ParamGroup> groups, double default_lr, double default_weight_decay)
    : groups_(std::move(groups)) {
  AM_CHECK(!groups_.empty(), "optimizer: no parameter groups");
  units_.resize(groups_.size());
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    ParamGroup& g = groups_[gi];
    if (!g.lr) g.lr = default_lr;
    if (!g.weight_decay) g.weight_decay = default_weight_decay;
    AM_CHECK(*g.lr >= 0.0, "optimizer: group ", gi, " has invalid lr ", *g.lr);
    AM_CHECK(*g.weight_decay >= 0.0, "optimizer: group ", gi, " has invalid weight_decay ", *g.weight_decay);
    for (auto& [name, t] : g.params) {
      AM_CHECK(t.defined(), "optimizer: parameter '", name, "' is undefined");
      dispatch_param(t.dtype(), "optimizer", [](auto) {});
      check_unit_tensor("optimizer", name, t, "data");
      Unit u;
      u.name = name;
      u.param = t;
      units_[gi].push_back(std::move(u));
    }
    for (const nn::FlatParameters& f : g.flat) {
      AM_CHECK(f.data.defined() && f.grad.defined() && f.data.dim() == 1 && f.grad.shape() == f.data.shape() &&
                   f.grad.dtype() == f.data.dtype(),
               "optimizer: a flat buffer needs 1-D data and grad of the same shape and dtype");
      dispatch_param(f.data.dtype(), "optimizer", [](auto) {});
      Unit u;
      u.param = f.data;
      u.flat_grad = f.grad;
      u.flat = true;
      u.slots = f.slots;
      units_[gi].push_back(std::move(u));
    }
  }
}

void Optimizer::ensure_state(Unit& u) {
  if (fp32_master_ && u.param.dtype() == DType::bf16 && !u.master.defined()) {
    NoGradGuard no_grad;
    u.master = ops::to_dtype(u.param.detach(), DType::f32);
  }
  if (!u.state.empty()) return;
  for (size_t k = 0; k < state_keys().size(); ++k)
    u.state.push_back(Tensor::zeros(u.param.shape(), state_dtype(u.param.dtype())));
}

void Optimizer::set_fp32_master_weights(bool on) {
  for (const auto& units : units_)
    for (const Unit& u : units)
      AM_CHECK(u.step == 0 && !u.master.defined(), name(), ": set_fp32_master_weights before the first step");
  fp32_master_ = on;
}

void Optimizer::step() {
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    for (Unit& u : units_[gi]) {
      Tensor grad = u.flat ? u.flat_grad : u.param.grad();
      if (!grad.defined()) continue;
      AM_CHECK(grad.shape() == u.param.shape() && grad.dtype() == u.param.dtype(), name(), ": gradient of parameter '",
               u.name, "' is ", grad.describe(), " but the parameter is ", u.param.describe());
      check_unit_tensor(name(), u.name, grad, "gradient");
      ensure_state(u);
      ++u.step;
      Tensor& target = u.master.defined() ? u.master : u.param;
      update(groups_[gi], u, target, grad);
      if (u.master.defined()) cpu::cast(u.master.data<float>(), u.param.data<bf16>(), u.param.numel());
    }
  }
}

void Optimizer::zero_grad() {
  for (auto& units : units_) {
    for (Unit& u : units) {
      Tensor grad = u.flat ? u.flat_grad : u.param.grad();
      if (!grad.defined()) continue;
      AM_CHECK(grad.is_contiguous(), name(), ": zero_grad needs contiguous gradients");
      std::memset(grad.raw_data(), 0, grad.nbytes());
    }
  }
}

std::map<std::string, Tensor> Optimizer::state_dict() {
  std::map<std::string, Tensor> out;
  const std::vector<std::string> keys = state_keys();
  for (auto& units : units_) {
    for (Unit& u : units) {
      ensure_state(u);
      for (size_t k = 0; k < keys.size(); ++k) {
        if (!u.flat) {
          out[u.name + "." + keys[k]] = u.state[k];
          continue;
        }
        for (const auto& slot : u.slots)
          out[slot.name + "." + keys[k]] = u.state[k].as_strided({slot.numel}, {1}, u.state[k].offset() + slot.offset);
      }
      if (!u.master.defined()) continue;
      if (!u.flat) out[u.name + ".fp32_master"] = u.master;
      for (const auto& slot : u.slots)
        out[slot.name + ".fp32_master"] = u.master.as_strided({slot.numel}, {1}, u.master.offset() + slot.offset);
    }
  }
  return out;
}

std::map<std::string, int64_t> Optimizer::step_counts() const {
  std::map<std::string, int64_t> out;
  for (const auto& units : units_) {
    for (const Unit& u : units) {
      if (!u.flat) {
        out[u.name] = u.step;
        continue;
      }
      for (const auto& slot : u.slots) out[slot.name] = u.step;
    }
  }
  return out;
}

void Optimizer::set_step_counts(const std::map<std::string, int64_t>& steps) {
  for (auto& units : units_) {
    for (Unit& u : units) {
      const std::string& key = u.flat ? (u.slots.empty() ? u.name : u.slots[0].name) : u.name;
      auto it = steps.find(key);
      AM_CHECK(it != steps.end(), name(), ": no step count for parameter '", key, "'");
      AM_CHECK(it->second >= 0, name(), ": negative step count for parameter '", key, "'");
      u.step = it->second;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Adam / AdamW

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions opt, bool decoupled)
    : Optimizer(std::move(groups), opt.lr, opt.weight_decay), opt_(opt), decoupled_(decoupled) {
  AM_CHECK(opt.lr >= 0.0, name(), ": invalid lr ", opt.lr);
  AM_CHECK(opt.eps >= 0.0, name(), ": invalid eps ", opt.eps);
  AM_CHECK(opt.beta1 >= 0.0 && opt.beta1 < 1.0, name(), ": invalid beta1 ", opt.beta1, " (need 0 <= beta1 < 1)");
  AM_CHECK(opt.beta2 >= 0.0 && opt.beta2 < 1.0, name(), ": invalid beta2 ", opt.beta2, " (need 0 <= beta2 < 1)");
}
Adam::Adam(std::vector<ParamGroup> groups, AdamOptions opt) : Adam(std::move(groups), opt, false) {}
Adam::Adam(const NamedTensors& params, AdamOptions opt) : Adam(one_group(params), opt, false) {}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamOptions opt) : Adam(std::move(groups), opt, true) {}
AdamW::AdamW(const NamedTensors& params, AdamOptions opt) : Adam(one_group(params), opt, true) {}

void Adam::update(const ParamGroup& group, Unit& u, Tensor& target, const Tensor& grad) {
  const double lr = *group.lr, wd = *group.weight_decay;
  const double bc1 = 1.0 - std::pow(opt_.beta1, double(u.step));
  const double bc2 = 1.0 - std::pow(opt_.beta2, double(u.step));
  dispatch_update(target, grad, name(), [&](auto ptag, auto gtag) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    using C = compute_t<P>;
    AdamScalars<C> s;
    s.decay = C(1.0 - lr * wd);
    s.wd = C(wd);
    s.w1 = C(1.0 - opt_.beta1);
    s.beta2 = C(opt_.beta2);
    s.omb2 = C(1.0 - opt_.beta2);
    s.bc2_sqrt = C(std::sqrt(bc2));
    s.eps = C(opt_.eps);
    s.neg_step_size = C(-(lr / bc1));
    P* p = target.data<P>();
    const G* g = grad.data<G>();
    C* m = u.state[0].data<C>();
    C* v = u.state[1].data<C>();
    with_bool(decoupled_, [&](auto dec) {
      with_bool(std::abs(double(s.w1)) < 0.5, [&](auto lo) {
        parallel_for(target.numel(), kGrain, [&](int64_t b, int64_t e) {
          adam_kernel<decltype(dec)::value, decltype(lo)::value>(p + b, g + b, m + b, v + b, e - b, s);
        });
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// SGD

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions opt)
    : Optimizer(std::move(groups), opt.lr, opt.weight_decay), opt_(opt) {
  AM_CHECK(opt.lr >= 0.0, "SGD: invalid lr ", opt.lr);
  AM_CHECK(opt.momentum >= 0.0, "SGD: invalid momentum ", opt.momentum);
  AM_CHECK(!opt.nesterov || (opt.momentum > 0.0 && opt.dampening == 0.0),
           "SGD: nesterov momentum requires a momentum and zero dampening");
}
SGD::SGD(const NamedTensors& params, SGDOptions opt) : SGD(one_group(params), opt) {}

std::vector<std::string> SGD::state_keys() const {
  if (opt_.momentum == 0.0) return {};
  return {"momentum_buffer"};
}

void SGD::update(const ParamGroup& group, Unit& u, Tensor& target, const Tensor& grad) {
  const double lr = *group.lr, wd = *group.weight_decay;
  dispatch_update(target, grad, name(), [&](auto ptag, auto gtag) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    using C = compute_t<P>;
    SgdScalars<C> s;
    s.wd = C(wd);
    s.momentum = C(opt_.momentum);
    s.omd = C(1.0 - opt_.dampening);
    s.neg_lr = C(-lr);
    P* p = target.data<P>();
    const G* g = grad.data<G>();
    const bool use_momentum = opt_.momentum != 0.0;
    C* buf = use_momentum ? u.state[0].data<C>() : nullptr;
    auto run = [&](auto kernel) {
      parallel_for(target.numel(), kGrain,
                   [&](int64_t b, int64_t e) { kernel(p + b, g + b, buf ? buf + b : nullptr, e - b, s); });
    };
    with_bool(wd != 0.0, [&](auto use_wd) {
      with_bool(opt_.nesterov, [&](auto nest) {
        constexpr bool W = decltype(use_wd)::value, N = decltype(nest)::value;
        if (!use_momentum)
          run(sgd_kernel<W, 0, N, P, G, C>);
        else if (u.step == 1)
          run(sgd_kernel<W, 1, N, P, G, C>);
        else
          run(sgd_kernel<W, 2, N, P, G, C>);
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Gradient clipping

double clip_grads(const std::vector<Tensor>& grads, double max_norm, double norm_type) {
  AM_CHECK(norm_type > 0.0, "clip_grad_norm: norm_type must be > 0 or infinity, got ", norm_type);
  const bool inf = std::isinf(norm_type);
  double acc = 0.0;
  for (const Tensor& g : grads) {
    if (!g.defined()) continue;
    AM_CHECK(g.is_contiguous(), "clip_grad_norm: gradient ", g.describe(), " must be contiguous");
    dispatch_param(g.dtype(), "clip_grad_norm", [&](auto tag) {
      using P = decltype(tag);
      const P* p = g.data<P>();
      const int64_t n = g.numel();
      double part = 0.0;
      if (inf) {
#pragma omp parallel for simd reduction(max : part) schedule(static) if (n > kGrain)
        for (int64_t i = 0; i < n; ++i) part = std::max(part, std::abs(double(to_compute(p[i]))));
        acc = std::max(acc, part);
      } else if (norm_type == 2.0) {
#pragma omp parallel for simd reduction(+ : part) schedule(static) if (n > kGrain)
        for (int64_t i = 0; i < n; ++i) {
          double x = double(to_compute(p[i]));
          part += x * x;
        }
        acc += part;
      } else {
#pragma omp parallel for simd reduction(+ : part) schedule(static) if (n > kGrain)
        for (int64_t i = 0; i < n; ++i) part += std::pow(std::abs(double(to_compute(p[i]))), norm_type);
        acc += part;
      }
    });
  }
  const double total = inf ? acc : (norm_type == 2.0 ? std::sqrt(acc) : std::pow(acc, 1.0 / norm_type));
  const double coef = std::min(max_norm / (total + 1e-6), 1.0);
  if (coef == 1.0) return total;  // x * 1 == x: the scaling pass would change nothing
  for (const Tensor& g : grads) {
    if (!g.defined()) continue;
    dispatch_param(g.dtype(), "clip_grad_norm", [&](auto tag) {
      using P = decltype(tag);
      using C = compute_t<P>;
      const C c = C(coef);
      P* p = g.data<P>();
      parallel_for(g.numel(), kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) p[i] = from_compute<P>(to_compute(p[i]) * c);
      });
    });
  }
  return total;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double norm_type) {
  std::vector<Tensor> grads;
  for (const Tensor& p : params)
    if (p.defined() && p.grad().defined()) grads.push_back(p.grad());
  return clip_grads(grads, max_norm, norm_type);
}

}  // namespace automodel::optim
