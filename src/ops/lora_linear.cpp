#include "ops/lora_linear.h"

#include "ops/backend.h"
#include "ops/cast.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

Tensor contiguous_detached(const Tensor& t) {
  if (!t.defined()) return t;
  return t.is_contiguous() ? t.detach() : contiguous(t.detach());
}

struct LoraLinearBackward : Node {
  Tensor x, w, a, b, u;  // detached, contiguous; each kept only when a wanted gradient needs it
  kernels::LoraDims dims;
  double scale = 1;
  kernels::LoraDropout drop;
  Shape x_shape, w_shape;
  bool has_bias = false;
  std::string name() const override { return "LoraLinearBackward"; }
  void release_saved() override { x = w = a = b = u = Tensor(); }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    Tensor g = grads[0];
    if (!g.defined()) return {Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    const bool need_x = next_edges[0].fn != nullptr, need_w = next_edges[1].fn != nullptr;
    const bool need_bias = has_bias && next_edges[2].fn != nullptr;
    const bool need_a = next_edges[3].fn != nullptr, need_b = next_edges[4].fn != nullptr;
    const DType dt = outputs[0].dtype;
    NoGradGuard no_grad;
    if (g.dtype() != dt) g = to_dtype(g, dt);
    if (!g.is_contiguous()) g = contiguous(g);
    const kernels::Backend& be = backend_of("lora_linear backward", g, x, w, a, b, u);
    const Device device = g.device();
    Tensor gx, gw, gbias, ga, gb;
    if (need_x) gx = Tensor::empty(x_shape, dt, device);
    if (need_w) gw = Tensor::empty(w_shape, dt, device);
    if (need_bias) gbias = Tensor::empty({dims.out}, dt, device);
    if (need_a) ga = Tensor::empty({dims.rank, dims.in}, dt, device);
    if (need_b) gb = Tensor::empty({dims.out, dims.rank}, dt, device);
    auto ptr = [](const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; };
    // The base's dtype: a frozen bf16 base under f32 activations has no dw / dbias.
    const DType base_dt = w.defined() ? w.dtype() : dt;
    be.lora_linear_backward(dt, base_dt, g.raw_data(), ptr(x), ptr(w), ptr(a), ptr(b), ptr(u), dims, scale, drop,
                            ptr(gx), ptr(ga), ptr(gb), ptr(gw), ptr(gbias));
    return {gx, gw, gbias, ga, gb};
  }
};

void check_rank2(const Tensor& t, const char* arg, const char* layout) {
  if (t.dim() != 2)
    throw Error(detail::str("lora_linear: ", arg, " must be ", layout, ", got ", t.describe()), "lora_linear");
}

}  // namespace

Tensor lora_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& lora_a,
                   const Tensor& lora_b, const LoraOptions& options) {
  const char* op = "lora_linear";
  check_defined(x, op, "x");
  check_defined(weight, op, "weight");
  check_defined(lora_a, op, "lora_a");
  check_defined(lora_b, op, "lora_b");
  const kernels::Backend& be = backend_of(op, x, weight, lora_a, lora_b, bias);
  dispatch_floating(x.dtype(), op, [](auto) {});
  check_same_dtype(x, lora_a, op);
  check_same_dtype(x, lora_b, op);
  const bool mixed = weight.dtype() != x.dtype();
  if (mixed && !(weight.dtype() == DType::bf16 && x.dtype() == DType::f32))
    throw Error(detail::str("lora_linear: weight ", weight.describe(), " with x ", x.describe(),
                            ": the base may differ from the activations only as bf16 under f32"),
                op, "cast x or the weight with ops::to_dtype");
  if (mixed && (weight.requires_grad() || (bias.defined() && bias.requires_grad())) && grad_enabled())
    throw Error(detail::str("lora_linear: a bf16 weight under f32 activations must be frozen, but ",
                            weight.requires_grad() ? "weight" : "bias", " requires grad"),
                op, "set_requires_grad(false) on the base, or use one dtype throughout");
  check_rank2(weight, "weight", "[out, in]");
  check_rank2(lora_a, "lora_a", "[rank, in]");
  check_rank2(lora_b, "lora_b", "[out, rank]");
  if (x.dim() < 1) throw Error(detail::str("lora_linear: x must have rank >= 1, got ", x.describe()), op);
  const int64_t out_f = weight.size(0), in_f = weight.size(1), rank = lora_a.size(0);
  if (x.size(-1) != in_f)
    throw Error(detail::str("lora_linear: x ", x.describe(), " has ", x.size(-1), " features but weight ",
                            weight.describe(), " expects ", in_f),
                op, "x's last dim must equal weight's second dim (weight is [out, in])");
  if (lora_a.size(1) != in_f || lora_b.size(0) != out_f || lora_b.size(1) != rank)
    throw Error(detail::str("lora_linear: adapters lora_a ", lora_a.describe(), " and lora_b ", lora_b.describe(),
                            " do not fit weight ", weight.describe(), " (expected lora_a [r, ", in_f, "], lora_b [",
                            out_f, ", r])"),
                op);
  if (rank < 1) throw Error(detail::str("lora_linear: rank must be >= 1, got ", lora_a.describe()), op);
  if (bias.defined()) {
    check_same_dtype(weight, bias, op);
    if (bias.dim() != 1 || bias.size(0) != out_f)
      throw Error(detail::str("lora_linear: bias ", bias.describe(), " does not match weight ", weight.describe(),
                              " (expected [", out_f, "])"),
                  op);
  }
  const double p = options.training ? options.dropout : 0.0;
  if (!(options.dropout >= 0.0 && options.dropout < 1.0))
    throw Error(detail::str("lora_linear: dropout must be in [0, 1), got ", options.dropout), op,
                "dropout is the fraction of elements zeroed, e.g. 0.05");

  Tensor xc = contiguous_detached(x), wc = contiguous_detached(weight), bc = contiguous_detached(bias);
  Tensor ac = contiguous_detached(lora_a), bbc = contiguous_detached(lora_b);
  const int64_t rows = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  kernels::LoraDims dims{rows, in_f, out_f, rank};
  kernels::LoraDropout drop;
  if (p > 0) {
    Generator& gen = options.generator ? *options.generator : default_generator();
    drop.p = p;
    drop.post = options.dropout_position == LoraDropoutPosition::post;
    const int64_t n = rows * (drop.post ? out_f : in_f);
    drop.seed = gen.seed();
    drop.first_block = gen.reserve(uint64_t((n + 3) / 4));
  }
  Shape shape = x.shape();
  shape.back() = out_f;
  Tensor y = Tensor::empty(shape, x.dtype(), x.device());
  Tensor u = Tensor::empty({rows, rank}, x.dtype(), x.device());
  be.lora_linear_forward(x.dtype(), weight.dtype(), xc.raw_data(), wc.raw_data(),
                         bc.defined() ? bc.raw_data() : nullptr, ac.raw_data(), bbc.raw_data(), dims, options.scale,
                         drop, u.raw_data(), y.raw_data());
  if (needs_grad(x, weight, bias, lora_a, lora_b)) {
    auto node = std::make_shared<LoraLinearBackward>();
    record(node, {x, weight, bias, lora_a, lora_b}, {y});
    node->dims = dims;
    node->scale = options.scale;
    node->drop = drop;
    node->x_shape = x.shape();
    node->w_shape = weight.shape();
    node->has_bias = bias.defined();
    const bool need_x = node->next_edges[0].fn != nullptr, need_w = node->next_edges[1].fn != nullptr;
    const bool need_a = node->next_edges[3].fn != nullptr, need_b = node->next_edges[4].fn != nullptr;
    if (need_a || need_w) node->x = xc;
    if (need_x) node->w = wc, node->a = ac;
    if (need_x || need_a) node->b = bbc;
    if (need_b) node->u = u;
  }
  return y;
}

}  // namespace automodel::ops
