#include "ops/moe_permute.h"

#include "ops/backend.h"
#include "ops/cast.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

Tensor as_contiguous(Tensor g, DType dt) {
  if (g.dtype() != dt) g = to_dtype(g, dt);
  return contiguous(g);
}

struct MoePermuteBackward : Node {
  Tensor positions;
  int64_t tokens = 0, k = 0, hidden = 0;
  std::string name() const override { return "MoePermuteBackward"; }
  void release_saved() override { positions = Tensor(); }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(positions.defined(), name(), ": saved routing already released (backward run twice?)");
    const DType dt = outputs[0].dtype;
    NoGradGuard no_grad;
    Tensor g = as_contiguous(grads[0], dt);
    const kernels::Backend& be = backend_of("moe_permute backward", g, positions);
    Tensor dx = Tensor::empty({tokens, hidden}, dt, g.device());
    be.moe_permute_backward(dt, g.raw_data(), positions.data<int64_t>(), tokens, k, hidden, dx.raw_data());
    return {dx};
  }
};

struct MoeUnpermuteBackward : Node {
  Tensor y, weights, positions;
  int64_t tokens = 0, k = 0, hidden = 0;
  std::string name() const override { return "MoeUnpermuteBackward"; }
  void release_saved() override { y = weights = positions = Tensor(); }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(positions.defined(), name(), ": saved tensors already released (backward run twice?)");
    const bool need_y = next_edges[0].fn != nullptr, need_w = next_edges[1].fn != nullptr;
    if (!grads[0].defined() || (!need_y && !need_w)) return {Tensor(), Tensor()};
    const DType dt = outputs[0].dtype;
    NoGradGuard no_grad;
    Tensor g = as_contiguous(grads[0], dt);
    const kernels::Backend& be = backend_of("moe_unpermute backward", g, y, weights, positions);
    Tensor dy = need_y ? Tensor::empty({tokens * k, hidden}, dt, g.device()) : Tensor();
    Tensor dw = need_w ? Tensor::empty({tokens, k}, dt, g.device()) : Tensor();
    be.moe_unpermute_backward(dt, g.raw_data(), y.raw_data(), weights.raw_data(), positions.data<int64_t>(), tokens, k,
                              hidden, need_y ? dy.raw_data() : nullptr, need_w ? dw.raw_data() : nullptr);
    return {dy, dw};
  }
};

void check_routing(const MoeRouting& r, const char* op) {
  AM_CHECK(r.positions.defined() && r.positions.dtype() == DType::i64 && r.positions.numel() == r.tokens * r.k, op,
           ": the routing is not one of moe_routing");
}

}  // namespace

MoeRouting moe_routing(const Tensor& experts, int64_t num_experts) {
  check_defined(experts, "moe_routing", "experts");
  if (experts.dtype() != DType::i64 || experts.dim() != 2)
    throw Error(detail::str("moe_routing: experts must be i64 [tokens, k], got ", experts.describe()), "moe_routing");
  if (num_experts < 1)
    throw Error(detail::str("moe_routing: num_experts must be positive, got ", num_experts), "moe_routing");
  const kernels::Backend& be = backend_of("moe_routing", experts);
  Tensor ec = contiguous(experts);
  int64_t bad_value = 0;
  const int64_t bad = be.first_bad_index(DType::i64, ec.raw_data(), ec.numel(), num_experts, &bad_value);
  if (bad >= 0)
    throw Error(detail::str("moe_routing: expert ", bad_value, " (at flat position ", bad, ") is outside [0, ",
                            num_experts, ")"),
                "moe_routing", "expert indices must be below the number of experts");
  MoeRouting r;
  r.tokens = experts.size(0), r.k = experts.size(1);
  r.counts = Tensor::empty({num_experts}, DType::i64, experts.device());
  r.positions = Tensor::empty({r.tokens * r.k}, DType::i64, experts.device());
  be.moe_routing(ec.data<int64_t>(), ec.numel(), num_experts, r.counts.data<int64_t>(), r.positions.data<int64_t>());
  return r;
}

Tensor moe_permute(const Tensor& x, const MoeRouting& routing) {
  check_defined(x, "moe_permute", "x");
  check_routing(routing, "moe_permute");
  if (x.dim() != 2 || x.size(0) != routing.tokens)
    throw Error(detail::str("moe_permute: x must be [", routing.tokens, ", hidden], got ", x.describe()),
                "moe_permute");
  dispatch_floating(x.dtype(), "moe_permute", [](auto) {});
  const kernels::Backend& be = backend_of("moe_permute", x, routing.positions);
  Tensor xc = contiguous(x);
  const int64_t hidden = x.size(1);
  Tensor out = Tensor::empty({routing.tokens * routing.k, hidden}, x.dtype(), x.device());
  be.moe_permute_forward(x.dtype(), xc.raw_data(), routing.positions.data<int64_t>(), routing.tokens, routing.k, hidden,
                         out.raw_data());
  if (needs_grad(xc)) {
    auto node = std::make_shared<MoePermuteBackward>();
    node->positions = routing.positions;
    node->tokens = routing.tokens, node->k = routing.k, node->hidden = hidden;
    record(node, {xc}, {out});
  }
  return out;
}

Tensor moe_unpermute(const Tensor& y, const Tensor& weights, const MoeRouting& routing) {
  check_defined(y, "moe_unpermute", "y");
  check_defined(weights, "moe_unpermute", "weights");
  check_routing(routing, "moe_unpermute");
  if (y.dim() != 2 || y.size(0) != routing.tokens * routing.k)
    throw Error(detail::str("moe_unpermute: y must be [", routing.tokens * routing.k, ", hidden], got ", y.describe()),
                "moe_unpermute");
  if (weights.shape() != Shape{routing.tokens, routing.k})
    throw Error(
        detail::str("moe_unpermute: weights must be [", routing.tokens, ", ", routing.k, "], got ", weights.describe()),
        "moe_unpermute");
  check_same_dtype(y, weights, "moe_unpermute");
  dispatch_floating(y.dtype(), "moe_unpermute", [](auto) {});
  const kernels::Backend& be = backend_of("moe_unpermute", y, weights, routing.positions);
  Tensor yc = contiguous(y), wc = contiguous(weights);
  const int64_t hidden = y.size(1);
  Tensor out = Tensor::empty({routing.tokens, hidden}, y.dtype(), y.device());
  be.moe_unpermute_forward(y.dtype(), yc.raw_data(), wc.raw_data(), routing.positions.data<int64_t>(), routing.tokens,
                           routing.k, hidden, out.raw_data());
  if (needs_grad(yc, wc)) {
    auto node = std::make_shared<MoeUnpermuteBackward>();
    node->y = yc.detach(), node->weights = wc.detach(), node->positions = routing.positions;
    node->tokens = routing.tokens, node->k = routing.k, node->hidden = hidden;
    record(node, {yc, wc}, {out});
  }
  return out;
}

}  // namespace automodel::ops
