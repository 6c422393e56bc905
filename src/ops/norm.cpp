#include "ops/norm.h"

#include "ops/backend.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

DType stats_dtype(DType dt) { return dt == DType::f64 ? DType::f64 : DType::f32; }

void check_norm_inputs(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_defined(x, op, "x");
  if (x.dim() < 1) throw Error(detail::str(op, ": x must have at least one dim, got ", x.describe()), op);
  const int64_t hidden = x.size(-1);
  for (auto [t, arg] : {std::pair{&weight, "weight"}, std::pair{&bias, "bias"}}) {
    if (!t->defined()) continue;
    check_same_device(x, *t, op);
    check_same_dtype(x, *t, op);
    if (t->dim() != 1 || t->size(0) != hidden)
      throw Error(detail::str(op, ": ", arg, " must be [", hidden, "] to match the last dim of x ", x.describe(),
                              ", got ", t->describe()),
                  op);
  }
}

void check_grad(const Node& node, const Tensor& g) {
  AM_CHECK(g.dtype() == node.outputs[0].dtype && g.shape() == node.outputs[0].shape, node.name(), ": gradient ",
           g.describe(), " for a ", dtype_name(node.outputs[0].dtype), shape_str(node.outputs[0].shape), " output");
}

void* data_or_null(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }

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
    if (with_sum) check_grad(*this, grads[0]);
    const kernels::Backend& be = backend_of(name().c_str(), x, g, dsum, weight);
    Tensor dx, dw;
    if (want_dx) dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (weight.defined() && w_edge.fn) dw = Tensor::empty(weight.shape(), weight.dtype(), weight.device());
    be.rmsnorm_backward(x.dtype(), g.raw_data(), x.raw_data(), data_or_null(weight), rstd.raw_data(), data_or_null(dx),
                        data_or_null(dw), rows, hidden, unit_offset, data_or_null(dsum));
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
    const kernels::Backend& be = backend_of("layer_norm backward", x, g, weight);
    const int64_t hidden = x.size(-1), rows = hidden ? x.numel() / hidden : 0;
    Tensor dx, dw, db;
    if (next_edges[0].fn) dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (weight.defined() && next_edges[1].fn) dw = Tensor::empty({hidden}, x.dtype(), x.device());
    if (has_bias && next_edges[2].fn) db = Tensor::empty({hidden}, x.dtype(), x.device());
    be.layernorm_backward(x.dtype(), g.raw_data(), x.raw_data(), data_or_null(weight), mean.raw_data(), rstd.raw_data(),
                          data_or_null(dx), data_or_null(dw), data_or_null(db), rows, hidden);
    return {dx, dw, db};
  }
  void release_saved() override { x = weight = mean = rstd = Tensor(); }
};

}  // namespace

Tensor rms_norm(const Tensor& x_in, const Tensor& weight_in, double eps, bool unit_offset) {
  check_norm_inputs("rms_norm", x_in, weight_in, Tensor());
  const kernels::Backend& be = backend_of("rms_norm", x_in);
  Tensor x = contiguous(x_in);
  Tensor w = weight_in.defined() ? contiguous(weight_in) : Tensor();
  const int64_t hidden = x.size(-1), rows = hidden ? x.numel() / hidden : 0;
  dispatch_floating(x.dtype(), "rms_norm", [](auto) {});
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor rstd = Tensor::empty({rows}, stats_dtype(x.dtype()), x.device());
  be.rmsnorm_forward(x.dtype(), x.raw_data(), data_or_null(w), y.raw_data(), rstd.raw_data(), rows, hidden, eps,
                     unit_offset);
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
  const kernels::Backend& be = backend_of("add_rms_norm", x_in, residual_in);
  check_same_dtype(x_in, residual_in, "add_rms_norm");
  if (residual_in.shape() != x_in.shape())
    throw Error(
        detail::str("add_rms_norm: residual ", residual_in.describe(), " and x ", x_in.describe(), " differ in shape"),
        "add_rms_norm");
  Tensor x = contiguous(x_in), res = contiguous(residual_in);
  Tensor w = weight_in.defined() ? contiguous(weight_in) : Tensor();
  const int64_t hidden = x.size(-1), rows = hidden ? x.numel() / hidden : 0;
  dispatch_floating(x.dtype(), "add_rms_norm", [](auto) {});
  Tensor sum = Tensor::empty(x.shape(), x.dtype(), x.device()), y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor rstd = Tensor::empty({rows}, stats_dtype(x.dtype()), x.device());
  be.add_rmsnorm_forward(x.dtype(), x.raw_data(), res.raw_data(), data_or_null(w), sum.raw_data(), y.raw_data(),
                         rstd.raw_data(), rows, hidden, eps, unit_offset);
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
  const kernels::Backend& be = backend_of("layer_norm", x_in);
  Tensor x = contiguous(x_in);
  Tensor w = weight_in.defined() ? contiguous(weight_in) : Tensor();
  Tensor b = bias_in.defined() ? contiguous(bias_in) : Tensor();
  const int64_t hidden = x.size(-1), rows = hidden ? x.numel() / hidden : 0;
  dispatch_floating(x.dtype(), "layer_norm", [](auto) {});
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({rows}, stats_dtype(x.dtype()), x.device());
  Tensor rstd = Tensor::empty({rows}, stats_dtype(x.dtype()), x.device());
  be.layernorm_forward(x.dtype(), x.raw_data(), data_or_null(w), data_or_null(b), y.raw_data(), mean.raw_data(),
                       rstd.raw_data(), rows, hidden, eps);
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
