#include "components/optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "components/optim/div_by_reciprocal.h"
#include "components/optim/master_split.h"
#include "core/arith.h"
#include "core/error.h"
#include "core/threads.h"
#include "kernels/cpu/cast.h"
#include "ops/view.h"

namespace automodel::optim {

namespace {

constexpr int64_t kGrain = 1 << 14;
// A tile's gradient, state and master (18 bytes an element for bf16 AdamW) stay in L1 between the steps of the
// pass; a block of tiles is what one thread takes at a time and what one partial sum of the fused norm covers.
constexpr int64_t kTile = 1024;
constexpr int64_t kTilesPerBlock = 16;

template <class F>
void dispatch_param(DType dt, const char* who, F&& f) {
  visit_dtype_among<float, double, bf16>(
      dt, f, [&] { AM_CHECK(false, who, ": parameters must be f32, f64 or bf16, got ", dtype_name(dt)); });
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

// Calls f(std::bool_constant<...>...) with runtime flags turned into compile-time ones.
template <class F>
void with_bool(bool b, F&& f) {
  if (b)
    f(std::true_type{});
  else
    f(std::false_type{});
}

// Calls f(P{}, G{}) for the updated type P (the parameter's, or f32 for its master) and the gradient's G.
template <class F>
void dispatch_update(DType target, DType grad, const char* who, F&& f) {
  dispatch_param(target, who, [&](auto tag) {
    using P = decltype(tag);
    if constexpr (std::is_same_v<P, float>) {
      if (grad == DType::bf16) return f(P{}, bf16{});
    }
    f(P{}, P{});
  });
}

void check_unit_tensor(const char* who, const std::string& name, const Tensor& t, const char* what) {
  AM_CHECK(t.is_contiguous(), who, ": ", what, " of parameter '", name, "' (", t.describe(), ") must be contiguous");
}

// clip_grad_norm's total: fp64 accumulation, one OpenMP reduction per tensor, tensors in order.
double grad_norm(const std::vector<Tensor>& grads, double norm_type) {
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
  return inf ? acc : (norm_type == 2.0 ? std::sqrt(acc) : std::pow(acc, 1.0 / norm_type));
}

// clip_grad_norm's coefficient; exactly 1 means there is nothing to scale (x * 1 == x).
double clip_coefficient(double max_norm, double total) { return std::min(max_norm / (total + 1e-6), 1.0); }

// The pass's work on a tile's gradient before the update reads it: its sum of squares (the fused 2-norm) and the
// clipping (in place, in the gradient's dtype, as clip_grads leaves it for the step to read).
template <class G>
void grad_prologue(G* __restrict g, int64_t n, double* sum_sq, bool scale, double coef) {
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

void grad_prologue(DType dt, void* g, int64_t n, double* sum_sq, bool scale, double coef) {
  dispatch_param(dt, "optimizer",
                 [&](auto tag) { grad_prologue(static_cast<decltype(tag)*>(g), n, sum_sq, scale, coef); });
}

// The master of elements [begin, begin + n) of u (reconstructed, exceptions patched in) into x.
template <class Exceptions>
void materialize_master(const Tensor& param, const Tensor& residual, const Exceptions& exceptions, int64_t begin,
                        int64_t n, float* x) {
  master::reconstruct_n(param.data<bf16>() + begin, reinterpret_cast<const uint16_t*>(residual.data<bf16>()) + begin, x,
                        n);
  auto it = std::lower_bound(exceptions.begin(), exceptions.end(), begin,
                             [](const auto& e, int64_t i) { return e.index < i; });
  for (; it != exceptions.end() && it->index < begin + n; ++it) x[it->index - begin] = it->value;
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
      u.segments.push_back({name, 0, t.numel()});
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
      int64_t end = 0;
      for (const auto& slot : f.slots) {
        AM_CHECK(slot.offset >= end && slot.numel >= 0 && slot.offset + slot.numel <= f.data.numel(),
                 "optimizer: slot '", slot.name, "' of a flat buffer overlaps another or lies outside the buffer");
        u.segments.push_back({slot.name, slot.offset, slot.numel});
        end = slot.offset + slot.numel;
      }
      if (f.slots.empty()) u.segments.push_back({"", 0, f.data.numel()});
      units_[gi].push_back(std::move(u));
    }
  }
}

void Optimizer::init_state(Unit& u) {
  for (size_t k = 0; k < state_keys().size(); ++k)
    u.state.push_back(Tensor::zeros(u.param.shape(), state_dtype(u.param.dtype())));
}

void Optimizer::state_views(Unit& u, std::map<std::string, Tensor>& out) {
  const std::vector<std::string> keys = state_keys();
  for (size_t k = 0; k < keys.size(); ++k) {
    if (!u.flat) {
      out[u.name + "." + keys[k]] = u.state[k];
      continue;
    }
    for (const Segment& s : u.segments)
      if (!s.name.empty())
        out[s.name + "." + keys[k]] = u.state[k].as_strided({s.numel}, {1}, u.state[k].offset() + s.begin);
  }
}

void Optimizer::ensure_state(Unit& u) {
  if (fp32_master_ && u.param.dtype() == DType::bf16 && !u.residual.defined()) {
    // Residual 0 everywhere: each master is its bf16 parameter exactly.
    u.residual = Tensor::zeros({u.param.numel()}, DType::bf16);
    u.exceptions.clear();
  }
  if (u.state_ready) return;
  init_state(u);
  u.state_ready = true;
}

void Optimizer::set_fp32_master_weights(bool on) {
  for (const auto& units : units_)
    for (const Unit& u : units)
      AM_CHECK(u.step == 0 && !u.has_master(), name(), ": set_fp32_master_weights before the first step");
  AM_CHECK(!(on && stochastic_round_), name(), ": fp32 master weights and bf16 stochastic rounding exclude each other");
  fp32_master_ = on;
}

void Optimizer::set_bf16_stochastic_round(bool on) {
  AM_CHECK(!(on && fp32_master_), name(), ": fp32 master weights and bf16 stochastic rounding exclude each other");
  stochastic_round_ = on;
}

double Optimizer::step(const StepOptions& o) {
  AM_CHECK(o.norm_type > 0.0, name(), ": norm_type must be > 0 or infinity, got ", o.norm_type);
  const double max_norm = o.max_norm.value_or(std::numeric_limits<double>::infinity());
  const bool clip = !(std::isinf(max_norm) && max_norm > 0);

  struct Work {
    size_t group;
    Unit* u;
    Tensor grad;
    TileUpdate update;
  };
  std::vector<Work> work;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    for (Unit& u : units_[gi]) {
      Tensor grad = u.flat ? u.flat_grad : u.param.grad();
      if (!grad.defined()) continue;
      AM_CHECK(grad.shape() == u.param.shape() && grad.dtype() == u.param.dtype(), name(), ": gradient of parameter '",
               u.name, "' is ", grad.describe(), " but the parameter is ", u.param.describe());
      check_unit_tensor(name(), u.name, grad, "gradient");
      work.push_back({gi, &u, grad, nullptr});
    }
  }

  // With clipping (or a norm other than the 2-norm) the norm is a pass of its own, clip_grads' exactly, over the
  // gradients in clip_grads' order as a caller would list them: per group its flat buffers, then its tensors.
  const bool fused_norm = !clip && o.norm_type == 2.0;
  double total = 0.0, coef = 1.0;
  if (!fused_norm) {
    std::vector<Tensor> grads;
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
      for (const Work& w : work)
        if (w.group == gi && w.u->flat) grads.push_back(w.grad);
      for (const Work& w : work)
        if (w.group == gi && !w.u->flat) grads.push_back(w.grad);
    }
    total = grad_norm(grads, o.norm_type);
    if (clip) coef = clip_coefficient(max_norm, total);
  }
  const bool scale = clip && coef != 1.0;

  // Blocks: fixed runs of elements inside one segment, so the partial sums (and with them the norm) do not depend
  // on the number of threads.
  struct Block {
    size_t work, seg;
    int64_t begin, end;
  };
  const int64_t multiple = tile_multiple();
  const int64_t tile = round_up(kTile, multiple);
  const int64_t block_len = tile * kTilesPerBlock;
  std::vector<Block> blocks;
  int64_t elements = 0;
  for (size_t wi = 0; wi < work.size(); ++wi) {
    const Unit& u = *work[wi].u;
    for (size_t si = 0; si < u.segments.size(); ++si) {
      const Segment& s = u.segments[si];
      for (int64_t b = s.begin; b < s.begin + s.numel; b += block_len)
        blocks.push_back({wi, si, b, std::min(b + block_len, s.begin + s.numel)});
      elements += s.numel;
    }
  }
  const int64_t grain = elements <= kGrain ? int64_t(blocks.size()) : 1;
  std::vector<double> sum_sq(blocks.size(), 0.0);
  auto sum_partials = [&] {
    double acc = 0.0;
    for (double s : sum_sq) acc += s;
    return std::sqrt(acc);
  };

  // Skipping needs the norm before anything is updated: the fused norm's tiles, summed as the update pass sums them.
  const bool norm_pass_first = fused_norm && o.skip_if_nonfinite;
  if (norm_pass_first) {
    parallel_for(int64_t(blocks.size()), grain, [&](int64_t b, int64_t e) {
      for (int64_t bi = b; bi < e; ++bi) {
        const Block& blk = blocks[size_t(bi)];
        const Tensor& grad = work[blk.work].grad;
        char* g = static_cast<char*>(grad.raw_data());
        const size_t gsize = dtype_size(grad.dtype());
        for (int64_t t = blk.begin; t < blk.end; t += tile)
          grad_prologue(grad.dtype(), g + size_t(t) * gsize, std::min(tile, blk.end - t), &sum_sq[size_t(bi)], false,
                        1.0);
      }
    });
    total = sum_partials();
  }
  if (o.skip_if_nonfinite && !std::isfinite(total)) {
    if (o.zero_grad)
      for (const Work& w : work) std::memset(w.grad.raw_data(), 0, w.grad.nbytes());
    return total;
  }
  const bool fused_sum = fused_norm && !norm_pass_first;

  for (Work& w : work) {
    ensure_state(*w.u);
    ++w.u->step;
    const bool via_f32 = w.u->has_master() || rounds_after_update(*w.u);
    const DType target = via_f32 ? DType::f32 : w.u->param.dtype();
    w.update = prepare(groups_[w.group], *w.u, target, w.grad.dtype());
  }

  std::vector<std::vector<MasterException>> exceptions(blocks.size());

  auto run_block = [&](size_t bi, std::vector<float>& x) {
    const Block& b = blocks[bi];
    const Work& w = work[b.work];
    Unit& u = *w.u;
    const DType gdt = w.grad.dtype();
    const size_t gsize = dtype_size(gdt), psize = dtype_size(u.param.dtype());
    char* grad = static_cast<char*>(w.grad.raw_data());
    char* param = static_cast<char*>(u.param.raw_data());
    const bool rounds = rounds_after_update(u);
    bf16* pbits = u.has_master() || rounds ? u.param.data<bf16>() : nullptr;
    uint16_t* residual = u.has_master() ? reinterpret_cast<uint16_t*>(u.residual.data<bf16>()) : nullptr;
    // Per unit and step: distinct random bits for every parameter element and step.
    const uint32_t key = master::hash32(uint32_t(u.step) * 0x9e3779b9u ^ master::hash32(uint32_t(b.work) + 1u));
    for (int64_t t = b.begin; t < b.end; t += tile) {
      const int64_t n = std::min(tile, b.end - t);
      void* g = grad + size_t(t) * gsize;
      grad_prologue(gdt, g, n, fused_sum ? &sum_sq[bi] : nullptr, scale, coef);
      void* target = param + size_t(t) * psize;
      if (pbits != nullptr) {
        x.resize(size_t(tile));
        if (residual != nullptr)
          materialize_master(u.param, u.residual, u.exceptions, t, n, x.data());
        else
          cpu::cast(pbits + t, x.data(), n);
        target = x.data();
      }
      w.update(Tile{target, g, t, n, b.seg, key});
      if (rounds) {
        master::stochastic_round_n(x.data(), pbits + t, n, key, t);
      } else if (pbits != nullptr && !master::split_n(x.data(), pbits + t, residual + t, n)) {
        for (int64_t j = 0; j < n; ++j) {
          uint16_t p, r;
          if (!master::split(x[size_t(j)], p, r)) exceptions[bi].push_back({t + j, x[size_t(j)]});
        }
      }
      if (o.zero_grad) std::memset(g, 0, size_t(n) * gsize);
    }
  };
  // Blocks read the old exceptions of their unit while others run; the new ones replace them afterwards.
  parallel_for(int64_t(blocks.size()), grain, [&](int64_t b, int64_t e) {
    std::vector<float> x;
    for (int64_t bi = b; bi < e; ++bi) run_block(size_t(bi), x);
  });
  for (size_t bi = 0; bi < blocks.size(); ++bi) {
    Unit& u = *work[blocks[bi].work].u;
    if (!u.has_master()) continue;
    if (bi == 0 || blocks[bi - 1].work != blocks[bi].work) u.exceptions.clear();
    u.exceptions.insert(u.exceptions.end(), exceptions[bi].begin(), exceptions[bi].end());
  }
  if (fused_sum) total = sum_partials();
  return total;
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
  for (auto& units : units_) {
    for (Unit& u : units) {
      ensure_state(u);
      state_views(u, out);
      if (!u.has_master()) continue;
      for (const Segment& s : u.segments) {
        if (s.name.empty()) continue;
        Tensor m = Tensor::empty(u.flat ? Shape{s.numel} : u.param.shape(), DType::f32);
        materialize_master(u.param, u.residual, u.exceptions, s.begin, s.numel, m.data<float>());
        out[s.name + ".fp32_master"] = m;
      }
    }
  }
  return out;
}

void Optimizer::load_state_dict(const std::map<std::string, Tensor>& state) {
  // What state_dict() would hold, without materializing the masters: views, and the masters' unit and segment.
  std::map<std::string, Tensor> views;
  struct MasterSlot {
    Unit* u;
    const Segment* seg;
  };
  std::map<std::string, MasterSlot> masters;
  for (auto& units : units_) {
    for (Unit& u : units) {
      ensure_state(u);
      state_views(u, views);
      if (u.has_master())
        for (const Segment& s : u.segments)
          if (!s.name.empty()) masters[s.name + ".fp32_master"] = {&u, &s};
    }
  }
  const char* hint = "pass the tensors of state_dict() of an optimizer of the same kind over the same parameters";
  auto expect = [&](const std::string& key, const Shape& shape, DType dtype) {
    auto it = state.find(key);
    if (it == state.end() || !it->second.defined())
      throw Error(std::string(name()) + " state lacks '" + key + "'", "load_state_dict", hint);
    if (it->second.shape() != shape || it->second.dtype() != dtype)
      throw Error(std::string(name()) + " state '" + key + "' is " + it->second.describe() + " but " +
                      shape_str(shape) + " " + dtype_name(dtype) + " is needed",
                  "load_state_dict", hint);
  };
  for (const auto& [key, view] : views) expect(key, view.shape(), view.dtype());
  for (const auto& [key, m] : masters) expect(key, m.u->flat ? Shape{m.seg->numel} : m.u->param.shape(), DType::f32);
  for (const auto& [key, t] : state)
    if (!views.count(key) && !masters.count(key))
      throw Error(std::string(name()) + " state has an unexpected tensor '" + key + "'", "load_state_dict", hint);

  for (const auto& [key, view] : views) {
    const Tensor& src = state.at(key);
    const bool same =
        src.storage() == view.storage() && src.offset() == view.offset() && src.strides() == view.strides();
    if (!same) ops::copy_into(view, src);
  }
  for (const auto& [key, m] : masters) {
    Unit& u = *m.u;
    const Segment& s = *m.seg;
    const Tensor src = ops::contiguous(state.at(key));
    const float* x = src.data<float>();
    bf16* p = u.param.data<bf16>() + s.begin;
    uint16_t* r = reinterpret_cast<uint16_t*>(u.residual.data<bf16>()) + s.begin;
    std::erase_if(u.exceptions,
                  [&](const MasterException& e) { return e.index >= s.begin && e.index < s.begin + s.numel; });
    if (!master::split_n(x, p, r, s.numel)) {
      for (int64_t j = 0; j < s.numel; ++j) {
        uint16_t pj, rj;
        if (!master::split(x[j], pj, rj)) u.exceptions.push_back({s.begin + j, x[j]});
      }
    }
  }
  for (auto& units : units_)
    for (Unit& u : units)
      std::sort(u.exceptions.begin(), u.exceptions.end(),
                [](const MasterException& a, const MasterException& b) { return a.index < b.index; });
}

std::map<std::string, int64_t> Optimizer::step_counts() const {
  std::map<std::string, int64_t> out;
  for (const auto& units : units_) {
    for (const Unit& u : units) {
      if (!u.flat) {
        out[u.name] = u.step;
        continue;
      }
      for (const Segment& s : u.segments)
        if (!s.name.empty()) out[s.name] = u.step;
    }
  }
  return out;
}

void Optimizer::set_step_counts(const std::map<std::string, int64_t>& steps) {
  for (auto& units : units_) {
    for (Unit& u : units) {
      const std::string& key = u.segments.empty() ? u.name : u.segments[0].name;
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

Optimizer::TileUpdate Adam::prepare(const ParamGroup& group, Unit& u, DType target, DType grad) {
  const double lr = *group.lr, wd = *group.weight_decay;
  const double bc1 = 1.0 - std::pow(opt_.beta1, double(u.step));
  const double bc2 = 1.0 - std::pow(opt_.beta2, double(u.step));
  TileUpdate update;
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
    s.bc2_sqrt_recip = C(1) / s.bc2_sqrt;
    s.eps = C(opt_.eps);
    s.neg_step_size = C(-(lr / bc1));
    C* m = u.state[0].data<C>();
    C* v = u.state[1].data<C>();
    with_bool(decoupled_, [&](auto dec) {
      with_bool(std::abs(double(s.w1)) < 0.5, [&](auto lo) {
        update = [=](const Tile& t) {
          adam_kernel<decltype(dec)::value, decltype(lo)::value>(
              static_cast<P*>(t.target), static_cast<const G*>(t.grad), m + t.begin, v + t.begin, t.n, s);
        };
      });
    });
  });
  return update;
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

Optimizer::TileUpdate SGD::prepare(const ParamGroup& group, Unit& u, DType target, DType grad) {
  const double lr = *group.lr, wd = *group.weight_decay;
  TileUpdate update;
  dispatch_update(target, grad, name(), [&](auto ptag, auto gtag) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    using C = compute_t<P>;
    SgdScalars<C> s;
    s.wd = C(wd);
    s.momentum = C(opt_.momentum);
    s.omd = C(1.0 - opt_.dampening);
    s.neg_lr = C(-lr);
    const bool use_momentum = opt_.momentum != 0.0;
    C* buf = use_momentum ? u.state[0].data<C>() : nullptr;
    auto bind = [&](auto kernel) {
      update = [=](const Tile& t) {
        kernel(static_cast<P*>(t.target), static_cast<const G*>(t.grad), buf ? buf + t.begin : nullptr, t.n, s);
      };
    };
    with_bool(wd != 0.0, [&](auto use_wd) {
      with_bool(opt_.nesterov, [&](auto nest) {
        constexpr bool W = decltype(use_wd)::value, N = decltype(nest)::value;
        if (!use_momentum)
          bind(sgd_kernel<W, 0, N, P, G, C>);
        else if (u.step == 1)
          bind(sgd_kernel<W, 1, N, P, G, C>);
        else
          bind(sgd_kernel<W, 2, N, P, G, C>);
      });
    });
  });
  return update;
}

// ---------------------------------------------------------------------------------------------
// Gradient clipping

double clip_grads(const std::vector<Tensor>& grads, double max_norm, double norm_type) {
  const double total = grad_norm(grads, norm_type);
  const double coef = clip_coefficient(max_norm, total);
  if (coef == 1.0) return total;  // x * 1 == x: the scaling pass would change nothing
  for (const Tensor& g : grads) {
    if (!g.defined()) continue;
    dispatch_param(g.dtype(), "clip_grad_norm", [&](auto tag) {
      using P = decltype(tag);
      P* p = g.data<P>();
      parallel_for(g.numel(), kGrain, [&](int64_t b, int64_t e) { grad_prologue(p + b, e - b, nullptr, true, coef); });
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
