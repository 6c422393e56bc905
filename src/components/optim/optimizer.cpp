#include "components/optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/arith.h"
#include "core/device_memory.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "ops/backend.h"
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

// The pairs an update takes: the updated type (the parameter's, or f32 for its master) and the gradient's, equal or
// f32 / bf16. Checked before the update's tiles run on many threads.
void check_update_types(DType target, DType grad, const char* who) {
  dispatch_param(target, who, [](auto) {});
  AM_CHECK(grad == target || (target == DType::f32 && grad == DType::bf16), who, ": no update for ", dtype_name(target),
           " parameters with ", dtype_name(grad), " gradients");
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
    dispatch_param(g.dtype(), "clip_grad_norm", [](auto) {});
    const double part =
        ops::backend_for(g.device(), "clip_grad_norm").grad_norm_power(g.dtype(), g.raw_data(), g.numel(), norm_type);
    acc = inf ? std::max(acc, part) : acc + part;
  }
  return inf ? acc : (norm_type == 2.0 ? std::sqrt(acc) : std::pow(acc, 1.0 / norm_type));
}

// Zeroes n elements of t's dtype from `data` (inside t) on t's device.
void zero_bytes(const Tensor& t, void* data, int64_t n) {
  const uint64_t zero = 0;
  device_memory(t.device()).fill(data, &zero, dtype_size(t.dtype()), n);
}

// clip_grad_norm's coefficient; exactly 1 means there is nothing to scale (x * 1 == x).
double clip_coefficient(double max_norm, double total) { return std::min(max_norm / (total + 1e-6), 1.0); }

// The master of elements [begin, begin + n) of u (reconstructed, exceptions patched in) into x.
template <class Exceptions>
void materialize_master(const kernels::Backend& be, const Tensor& param, const Tensor& residual,
                        const Exceptions& exceptions, int64_t begin, int64_t n, float* x) {
  be.master_reconstruct(param.data<bf16>() + begin, residual.data<bf16>() + begin, x, n);
  auto it = std::lower_bound(exceptions.begin(), exceptions.end(), begin,
                             [](const auto& e, int64_t i) { return e.index < i; });
  for (; it != exceptions.end() && it->index < begin + n; ++it) x[it->index - begin] = it->value;
}

// Whether 1-D `next` starts in t's storage right where contiguous `t` ends, with t's dtype.
bool follows(const Tensor& t, const Tensor& next) {
  return next.storage() == t.storage() && next.dtype() == t.dtype() && next.offset() == t.offset() + t.numel();
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
      u.segments.push_back({name, 0, t.numel(), t.numel()});
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
        u.segments.push_back({slot.name, slot.offset, slot.numel, slot.whole > 0 ? slot.whole : slot.numel});
        end = slot.offset + slot.numel;
      }
      if (f.slots.empty()) u.segments.push_back({"", 0, f.data.numel(), f.data.numel()});
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

std::vector<Optimizer::Work> Optimizer::collect_work() {
  std::vector<Work> work;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    for (Unit& u : units_[gi]) {
      Tensor grad = u.flat ? u.flat_grad : u.param.grad();
      if (!grad.defined()) continue;
      AM_CHECK(grad.shape() == u.param.shape() && grad.dtype() == u.param.dtype(), name(), ": gradient of parameter '",
               u.name, "' is ", grad.describe(), " but the parameter is ", u.param.describe());
      check_unit_tensor(name(), u.name, grad, "gradient");
      Work w{gi, &u, grad, &ops::backend_for(u.param.device(), name()), 0, 0, nullptr};
      if (!work.empty()) {
        const Work& prev = work.back();
        const bool continues =
            prev.group == gi && prev.u->flat && u.flat && follows(prev.u->param, u.param) && follows(prev.grad, grad);
        w.run = continues ? prev.run : prev.run + 1;
        w.run_offset = continues ? prev.run_offset + prev.u->param.numel() : 0;
      }
      work.push_back(std::move(w));
    }
  }
  return work;
}

// clip_grads' norm over the gradients as a caller would list them: per group its flat buffers (a run as one
// tensor), then its tensors.
double Optimizer::separate_norm(const std::vector<Work>& work, double norm_type) const {
  std::vector<Tensor> grads;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    for (size_t wi = 0; wi < work.size(); ++wi) {
      const Work& w = work[wi];
      if (w.group != gi || !w.u->flat || w.run_offset != 0) continue;
      int64_t n = 0;
      for (size_t wj = wi; wj < work.size() && work[wj].run == w.run; ++wj) n += work[wj].grad.numel();
      grads.push_back(w.grad.as_strided({n}, {1}, w.grad.offset()));
    }
    for (const Work& w : work)
      if (w.group == gi && !w.u->flat) grads.push_back(w.grad);
  }
  return grad_norm(grads, norm_type);
}

Optimizer::Blocks Optimizer::plan_blocks(const std::vector<Work>& work) const {
  Blocks plan;
  plan.tile = round_up(kTile, tile_multiple());
  const int64_t block_len = plan.tile * kTilesPerBlock;
  int64_t elements = 0;
  for (size_t wi = 0; wi < work.size(); ++wi) {
    const Unit& u = *work[wi].u;
    for (size_t si = 0; si < u.segments.size(); ++si) {
      const Segment& s = u.segments[si];
      for (int64_t b = s.begin; b < s.begin + s.numel; b += block_len)
        plan.blocks.push_back({wi, si, b, std::min(b + block_len, s.begin + s.numel)});
      elements += s.numel;
    }
  }
  plan.grain = elements <= kGrain ? int64_t(plan.blocks.size()) : 1;
  return plan;
}

// The fused norm's partial sums without an update: skipping a non-finite step needs the norm before anything is
// updated, and these are the sums the update pass would add.
void Optimizer::fused_norm_pass(const std::vector<Work>& work, const Blocks& plan, std::vector<double>& sum_sq) const {
  parallel_for(int64_t(plan.blocks.size()), plan.grain, [&](int64_t b, int64_t e) {
    for (int64_t bi = b; bi < e; ++bi) {
      const Block& blk = plan.blocks[size_t(bi)];
      const Tensor& grad = work[blk.work].grad;
      char* g = static_cast<char*>(grad.raw_data());
      const size_t gsize = dtype_size(grad.dtype());
      for (int64_t t = blk.begin; t < blk.end; t += plan.tile)
        work[blk.work].backend->grad_prologue(grad.dtype(), g + size_t(t) * gsize, std::min(plan.tile, blk.end - t),
                                              &sum_sq[size_t(bi)], false, 1.0);
    }
  });
}

void Optimizer::prepare_updates(std::vector<Work>& work) {
  for (Work& w : work) {
    ensure_state(*w.u);
    ++w.u->step;
    const bool via_f32 = w.u->has_master() || rounds_after_update(*w.u);
    const DType target = via_f32 ? DType::f32 : w.u->param.dtype();
    w.update = prepare(groups_[w.group], *w.u, target, w.grad.dtype());
  }
}

void Optimizer::update_block(const Work& w, const Block& b, int64_t tile, double* sum_sq, bool scale, double coef,
                             bool zero_grad, std::vector<MasterException>& exceptions, std::vector<float>& x,
                             std::vector<int64_t>& failures) const {
  const kernels::Backend& be = *w.backend;
  const Unit& u = *w.u;
  const DType gdt = w.grad.dtype();
  const size_t gsize = dtype_size(gdt), psize = dtype_size(u.param.dtype());
  char* grad = static_cast<char*>(w.grad.raw_data());
  char* param = static_cast<char*>(u.param.raw_data());
  const bool rounds = rounds_after_update(u);
  bf16* pbits = u.has_master() || rounds ? u.param.data<bf16>() : nullptr;
  bf16* residual = u.has_master() ? u.residual.data<bf16>() : nullptr;
  // Per run and step: distinct random bits for every parameter element and step.
  const uint32_t key = hash32(uint32_t(u.step) * 0x9e3779b9u ^ hash32(uint32_t(w.run) + 1u));
  for (int64_t t = b.begin; t < b.end; t += tile) {
    const int64_t n = std::min(tile, b.end - t);
    void* g = grad + size_t(t) * gsize;
    be.grad_prologue(gdt, g, n, sum_sq, scale, coef);
    void* target = param + size_t(t) * psize;
    if (pbits != nullptr) {
      x.resize(size_t(tile));
      if (residual != nullptr)
        materialize_master(be, u.param, u.residual, u.exceptions, t, n, x.data());
      else
        be.cast(pbits + t, DType::bf16, x.data(), DType::f32, n);
      target = x.data();
    }
    w.update(Tile{target, g, t, n, b.seg, key, w.run_offset + t});
    if (rounds) {
      be.stochastic_round(x.data(), pbits + t, n, key, w.run_offset + t);
    } else if (pbits != nullptr) {
      failures.resize(size_t(tile));
      const int64_t failed = be.master_split(x.data(), pbits + t, residual + t, n, failures.data());
      for (int64_t f = 0; f < failed; ++f) {
        const int64_t j = failures[size_t(f)];
        exceptions.push_back({t + j, x[size_t(j)]});
      }
    }
    if (zero_grad) zero_bytes(w.grad, g, n);
  }
}

double Optimizer::step(const StepOptions& o) {
  AM_CHECK(o.norm_type > 0.0, name(), ": norm_type must be > 0 or infinity, got ", o.norm_type);
  const double max_norm = o.max_norm.value_or(std::numeric_limits<double>::infinity());
  const bool clip = !(std::isinf(max_norm) && max_norm > 0);
  std::vector<Work> work = collect_work();

  // With clipping (or a norm other than the 2-norm) the norm is a pass of its own, clip_grads' exactly.
  const bool fused_norm = !clip && o.norm_type == 2.0;
  double total = 0.0, coef = 1.0;
  if (!fused_norm) {
    total = separate_norm(work, o.norm_type);
    if (o.global_norm) total = o.global_norm(total);
    if (clip) coef = clip_coefficient(max_norm, total);
  }
  const bool scale = clip && coef != 1.0;

  const Blocks plan = plan_blocks(work);
  std::vector<double> sum_sq(plan.blocks.size(), 0.0);
  auto sum_partials = [&] {
    double acc = 0.0;
    for (double s : sum_sq) acc += s;
    return std::sqrt(acc);
  };
  const bool norm_pass_first = fused_norm && o.skip_if_nonfinite;
  if (norm_pass_first) {
    fused_norm_pass(work, plan, sum_sq);
    total = sum_partials();
    if (o.global_norm) total = o.global_norm(total);
  }
  if (o.skip_if_nonfinite && !std::isfinite(total)) {
    if (o.zero_grad)
      for (const Work& w : work) zero_bytes(w.grad, w.grad.raw_data(), w.grad.numel());
    return total;
  }
  const bool fused_sum = fused_norm && !norm_pass_first;

  prepare_updates(work);
  // Blocks read the old exceptions of their unit while others run; the new ones replace them afterwards.
  std::vector<std::vector<MasterException>> exceptions(plan.blocks.size());
  parallel_for(int64_t(plan.blocks.size()), plan.grain, [&](int64_t b, int64_t e) {
    std::vector<float> x;
    std::vector<int64_t> failures;
    for (int64_t bi = b; bi < e; ++bi) {
      const Block& blk = plan.blocks[size_t(bi)];
      update_block(work[blk.work], blk, plan.tile, fused_sum ? &sum_sq[size_t(bi)] : nullptr, scale, coef, o.zero_grad,
                   exceptions[size_t(bi)], x, failures);
    }
  });
  for (size_t bi = 0; bi < plan.blocks.size(); ++bi) {
    Unit& u = *work[plan.blocks[bi].work].u;
    if (!u.has_master()) continue;
    if (bi == 0 || plan.blocks[bi - 1].work != plan.blocks[bi].work) u.exceptions.clear();
    u.exceptions.insert(u.exceptions.end(), exceptions[bi].begin(), exceptions[bi].end());
  }
  if (fused_sum) {
    total = sum_partials();
    if (o.global_norm) total = o.global_norm(total);
  }
  return total;
}

void Optimizer::zero_grad() {
  for (auto& units : units_) {
    for (Unit& u : units) {
      Tensor grad = u.flat ? u.flat_grad : u.param.grad();
      if (!grad.defined()) continue;
      AM_CHECK(grad.is_contiguous(), name(), ": zero_grad needs contiguous gradients");
      zero_bytes(grad, grad.raw_data(), grad.numel());
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
        materialize_master(ops::backend_for(u.param.device(), name()), u.param, u.residual, u.exceptions, s.begin,
                           s.numel, m.data<float>());
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
    bf16* r = u.residual.data<bf16>() + s.begin;
    std::erase_if(u.exceptions,
                  [&](const MasterException& e) { return e.index >= s.begin && e.index < s.begin + s.numel; });
    const kernels::Backend& be = ops::backend_for(u.param.device(), name());
    // In chunks, so that the indices of the floats a split cannot restore need room for one chunk only.
    constexpr int64_t kChunk = int64_t(1) << 16;
    std::vector<int64_t> failures(size_t(std::min(kChunk, s.numel)));
    for (int64_t c = 0; c < s.numel; c += kChunk) {
      const int64_t failed = be.master_split(x + c, p + c, r + c, std::min(kChunk, s.numel - c), failures.data());
      for (int64_t f = 0; f < failed; ++f) {
        const int64_t j = c + failures[size_t(f)];
        u.exceptions.push_back({s.begin + j, x[j]});
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
      // A flat buffer without slots holds no parameter to count (e.g. a shard of nothing but padding).
      if (u.flat && u.segments.size() == 1 && u.segments[0].name.empty()) continue;
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
  check_update_types(target, grad, name());
  kernels::AdamStep s;
  s.decoupled = decoupled_;
  s.decay = 1.0 - lr * wd;
  s.weight_decay = wd;
  s.one_minus_beta1 = 1.0 - opt_.beta1;
  s.beta2 = opt_.beta2;
  s.one_minus_beta2 = 1.0 - opt_.beta2;
  s.bc2_sqrt = std::sqrt(bc2);
  s.eps = opt_.eps;
  s.neg_step_size = -(lr / bc1);
  const kernels::Backend& be = ops::backend_for(u.param.device(), name());
  char* m = static_cast<char*>(u.state[0].raw_data());
  char* v = static_cast<char*>(u.state[1].raw_data());
  const size_t state_size = dtype_size(u.state[0].dtype());
  return [=, &be](const Tile& t) {
    const size_t at = size_t(t.begin) * state_size;
    be.adam_update(target, grad, s, t.target, t.grad, m + at, v + at, t.n);
  };
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
  check_update_types(target, grad, name());
  kernels::SgdStep s;
  s.weight_decay = wd;
  s.momentum = opt_.momentum;
  s.one_minus_dampening = 1.0 - opt_.dampening;
  s.neg_lr = -lr;
  const bool use_momentum = opt_.momentum != 0.0;
  s.kind = !use_momentum ? 0 : u.step == 1 ? 1 : 2;
  s.nesterov = opt_.nesterov;
  const kernels::Backend& be = ops::backend_for(u.param.device(), name());
  char* buf = use_momentum ? static_cast<char*>(u.state[0].raw_data()) : nullptr;
  const size_t state_size = use_momentum ? dtype_size(u.state[0].dtype()) : 0;
  return [=, &be](const Tile& t) {
    be.sgd_update(target, grad, s, t.target, t.grad, buf ? buf + size_t(t.begin) * state_size : nullptr, t.n);
  };
}

// ---------------------------------------------------------------------------------------------
// Gradient clipping

double clip_grads(const std::vector<Tensor>& grads, double max_norm, double norm_type) {
  const double total = grad_norm(grads, norm_type);
  const double coef = clip_coefficient(max_norm, total);
  if (coef == 1.0) return total;  // x * 1 == x: the scaling pass would change nothing
  for (const Tensor& g : grads) {
    if (!g.defined()) continue;
    dispatch_param(g.dtype(), "clip_grad_norm", [](auto) {});
    const kernels::Backend& be = ops::backend_for(g.device(), "clip_grad_norm");
    char* p = static_cast<char*>(g.raw_data());
    const size_t size = dtype_size(g.dtype());
    parallel_for(g.numel(), kGrain, [&](int64_t b, int64_t e) {
      be.grad_prologue(g.dtype(), p + size_t(b) * size, e - b, nullptr, true, coef);
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
