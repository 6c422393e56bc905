#include "ops/norm.h"

#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/rmsnorm.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

DType stats_dtype(DType dt) { return dt == DType::f64 ? DType::f64 : DType::f32; }

void check_norm_inputs(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_defined(x, op, "x");
  check_cpu(x, op);
  if (x.dim() < 1) throw Error(detail::str(op, ": x must have at least one dim, got ", x.describe()), op);
  const int64_t hidden = x.size(-1);
  for (auto [t, arg] : {std::pair{&weight, "weight"}, std::pair{&bias, "bias"}}) {
    if (!t->defined()) continue;
    check_cpu(*t, op);
    check_same_dtype(x, *t, op);
    if (t->dim() != 1 || t->size(0) != hidden)
      throw Error(detail::str(op, ": ", arg, " must be [", hidden, "] to match the last dim of x ", x.describe(),
                              ", got ", t->describe()),
                  op);
  }
}

void check_grad(const Node& node, const Tensor& g) {
  AM_CHECK(g.dtype() == node.outputs[0].dtype, node.name(), ": gradient ", g.describe(), " for a ",
           dtype_name(node.outputs[0].dtype), " output");
}

// rms_norm: outputs {y}, inputs {x, w}. add_rms_norm: outputs {sum, y} with x the saved sum,
// inputs {x, residual, w}; both inputs of the sum get d(sum) + the norm's dx.
struct RmsNormBackward : Node {
  Tensor x, weight, rstd;
  bool unit_offset = false;
  bool with_sum = false;
  std::string name() const override { return with_sum ? "AddRmsNormBackward" : "RmsNormBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    const size_t gi = with_sum ? 1 : 0;
    check_grad(*this, grads[gi]);
    Tensor g = contiguous(grads[gi]);
    Tensor dsum = with_sum ? contiguous(grads[0]) : Tensor();
    const Edge& w_edge = next_edges[with_sum ? 2 : 1];
    const bool want_dx = next_edges[0].fn || (with_sum && next_edges[1].fn);
    const int64_t hidden = x.size(-1), rows = hidden ? x.numel() / hidden : 0;
    Tensor dx, dw;
    if (want_dx) dx = Tensor::empty(x.shape(), x.dtype());
    if (weight.defined() && w_edge.fn) dw = Tensor::empty(weight.shape(), weight.dtype());
    dispatch_floating(x.dtype(), "rms_norm backward", [&](auto tag) {
      using T = decltype(tag);
      using C = compute_t<T>;
      cpu::rmsnorm_backward(g.data<T>(), x.data<T>(), weight.defined() ? weight.data<T>() : nullptr, rstd.data<C>(),
                            dx.defined() ? dx.data<T>() : nullptr, dw.defined() ? dw.data<T>() : nullptr, rows, hidden,
                            unit_offset, dsum.defined() ? dsum.data<T>() : nullptr);
    });
    if (with_sum) return {dx, dx, dw};
    return {dx, dw};
  }
  void release_saved() override { x = weight = rstd = Tensor(); }
};

struct LayerNormBackward : Node {
  Tensor x, weight, mean, rstd;
  bool has_bias = false;
  std::string name() const override { return "LayerNormBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    check_grad(*this, grads[0]);
    Tensor g = contiguous(grads[0]);
    const int64_t hidden = x.size(-1), rows = hidden ? x.numel() / hidden : 0;
    Tensor dx, dw, db;
    if (next_edges[0].fn) dx = Tensor::empty(x.shape(), x.dtype());
    if (weight.defined() && next_edges[1].fn) dw = Tensor::empty({hidden}, x.dtype());
    if (has_bias && next_edges[2].fn) db = Tensor::empty({hidden}, x.dtype());
    dispatch_floating(x.dtype(), "layer_norm backward", [&](auto tag) {
      using T = decltype(tag);
      using C = compute_t<T>;
      cpu::layernorm_backward(g.data<T>(), x.data<T>(), weight.defined() ? weight.data<T>() : nullptr, mean.data<C>(),
                              rstd.data<C>(), dx.defined() ? dx.data<T>() : nullptr,
                              dw.defined() ? dw.data<T>() : nullptr, db.defined() ? db.data<T>() : nullptr, rows,
                              hidden);
    });
    return {dx, dw, db};
  }
  void release_saved() override { x = weight = mean = rstd = Tensor(); }
};

}  // namespace

Tensor rms_norm(const Tensor& x_in, const Tensor& weight_in, double eps, bool unit_offset) {
  check_norm_inputs("rms_norm", x_in, weight_in, Tensor());
  Tensor x = contiguous(x_in);
  Tensor w = weight_in.defined() ? contiguous(weight_in) : Tensor();
  const int64_t hidden = x.size(-1), rows = hidden ? x.numel() / hidden : 0;
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  Tensor rstd = Tensor::empty({rows}, stats_dtype(x.dtype()));
  dispatch_floating(x.dtype(), "rms_norm", [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    cpu::rmsnorm_forward(x.data<T>(), w.defined() ? w.data<T>() : nullptr, y.data<T>(), rstd.data<C>(), rows, hidden,
                         eps, unit_offset);
  });
  if (needs_grad(x, w)) {
    auto node = std::make_shared<RmsNormBackward>();
    node->x = x;
    node->weight = w;
    node->rstd = rstd;
    node->unit_offset = unit_offset;
    record(node, {x, w}, {y});
  }
  return y;
}

std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x_in, const Tensor& residual_in, const Tensor& weight_in,
                                       double eps, bool unit_offset) {
  check_norm_inputs("add_rms_norm", x_in, weight_in, Tensor());
  check_defined(residual_in, "add_rms_norm", "residual");
  check_same_dtype(x_in, residual_in, "add_rms_norm");
  if (residual_in.shape() != x_in.shape())
    throw Error(
        detail::str("add_rms_norm: residual ", residual_in.describe(), " and x ", x_in.describe(), " differ in shape"),
        "add_rms_norm");
  Tensor x = contiguous(x_in), res = contiguous(residual_in);
  Tensor w = weight_in.defined() ? contiguous(weight_in) : Tensor();
  const int64_t hidden = x.size(-1), rows = hidden ? x.numel() / hidden : 0;
  Tensor sum = Tensor::empty(x.shape(), x.dtype()), y = Tensor::empty(x.shape(), x.dtype());
  Tensor rstd = Tensor::empty({rows}, stats_dtype(x.dtype()));
  dispatch_floating(x.dtype(), "add_rms_norm", [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    cpu::add_rmsnorm_forward(x.data<T>(), res.data<T>(), w.defined() ? w.data<T>() : nullptr, sum.data<T>(),
                             y.data<T>(), rstd.data<C>(), rows, hidden, eps, unit_offset);
  });
  if (needs_grad(x, res, w)) {
    auto node = std::make_shared<RmsNormBackward>();
    node->x = sum.detach();
    node->weight = w;
    node->rstd = rstd;
    node->unit_offset = unit_offset;
    node->with_sum = true;
    record(node, {x, res, w}, {sum, y});
  }
  return {sum, y};
}

Tensor layer_norm(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in, double eps) {
  check_norm_inputs("layer_norm", x_in, weight_in, bias_in);
  Tensor x = contiguous(x_in);
  Tensor w = weight_in.defined() ? contiguous(weight_in) : Tensor();
  Tensor b = bias_in.defined() ? contiguous(bias_in) : Tensor();
  const int64_t hidden = x.size(-1), rows = hidden ? x.numel() / hidden : 0;
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  Tensor mean = Tensor::empty({rows}, stats_dtype(x.dtype()));
  Tensor rstd = Tensor::empty({rows}, stats_dtype(x.dtype()));
  dispatch_floating(x.dtype(), "layer_norm", [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    cpu::layernorm_forward(x.data<T>(), w.defined() ? w.data<T>() : nullptr, b.defined() ? b.data<T>() : nullptr,
                           y.data<T>(), mean.data<C>(), rstd.data<C>(), rows, hidden, eps);
  });
  if (needs_grad(x, w, b)) {
    auto node = std::make_shared<LayerNormBackward>();
    node->x = x;
    node->weight = w;
    node->mean = mean;
    node->rstd = rstd;
    node->has_bias = b.defined();
    record(node, {x, w, b}, {y});
  }
  return y;
}

}  // namespace automodel::ops
