#include "ops/clamped_swiglu.h"

#include <cmath>

#include "ops/backend.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

constexpr const char* kOp = "clamped_swiglu";

struct ClampedSwigluBackward : Node {
  Tensor gate_up;  // contiguous, detached
  double alpha = 0, limit = 0;
  std::string name() const override { return "ClampedSwigluBackward"; }
  void release_saved() override { gate_up = Tensor(); }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(gate_up.defined(), name(), ": saved input already released (backward run twice without retain_graph?)");
    if (!grads[0].defined()) return {Tensor()};
    Tensor g = contiguous(grads[0]);
    AM_CHECK(g.dtype() == gate_up.dtype() && g.numel() * 2 == gate_up.numel(), name(), ": gradient ", g.describe(),
             " for ", gate_up.describe());
    const kernels::Backend& be = backend_of(kOp, gate_up, g);
    Tensor dgate_up = Tensor::empty(gate_up.shape(), gate_up.dtype(), gate_up.device());
    be.clamped_swiglu_backward(gate_up.dtype(), gate_up.raw_data(), g.raw_data(), dgate_up.raw_data(), g.numel(), alpha,
                               limit);
    return {dgate_up};
  }
};

}  // namespace

Tensor clamped_swiglu(const Tensor& gate_up, double alpha, double limit) {
  check_defined(gate_up, kOp, "gate_up");
  const kernels::Backend& be = backend_of(kOp, gate_up);
  if (gate_up.dim() == 0 || gate_up.size(-1) % 2 != 0)
    throw Error(detail::str("clamped_swiglu: gate_up must have an even last dimension (gate and up interleaved), got ",
                            gate_up.describe()),
                kOp);
  if (!(limit > 0) || !std::isfinite(limit) || !std::isfinite(alpha))
    throw Error(detail::str("clamped_swiglu: limit must be positive and finite and alpha finite, got limit ", limit,
                            ", alpha ", alpha),
                kOp, "check swiglu_limit / swiglu_alpha in config.json");
  dispatch_floating(gate_up.dtype(), kOp, [](auto) {});
  Tensor x = contiguous(gate_up);
  Shape shape = gate_up.shape();
  shape.back() /= 2;
  Tensor y = Tensor::empty(shape, x.dtype(), x.device());
  be.clamped_swiglu_forward(x.dtype(), x.raw_data(), y.raw_data(), y.numel(), alpha, limit);
  if (needs_grad(x)) {
    auto node = std::make_shared<ClampedSwigluBackward>();
    node->gate_up = x.detach();
    node->alpha = alpha, node->limit = limit;
    record(node, {x}, {y});
  }
  return y;
}

}  // namespace automodel::ops
