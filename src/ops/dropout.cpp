#include "ops/dropout.h"

#include <cmath>

#include "ops/backend.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

// Regenerates the forward's mask from (seed, first_block): nothing but four numbers is saved.
struct DropoutBackward : Node {
  double p;
  uint64_t seed = 0, first_block = 0;
  std::string name() const override { return "DropoutBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    Tensor g = contiguous(grads[0]);
    const kernels::Backend& be = backend_of("dropout", g);
    if (p >= 1.0) return {Tensor::zeros(g.shape(), g.dtype(), g.device())};
    dispatch_floating(g.dtype(), "dropout", [](auto) {});
    Tensor gx = Tensor::empty(g.shape(), g.dtype(), g.device());
    be.dropout_backward(g.dtype(), g.raw_data(), gx.raw_data(), g.numel(), p, seed, first_block);
    return {gx};
  }
};

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  check_defined(x, "dropout", "x");
  const kernels::Backend& be = backend_of("dropout", x);
  if (!(p >= 0.0 && p <= 1.0))
    throw Error(detail::str("dropout: probability p must be in [0, 1], got ", p), "dropout",
                "p is the fraction of elements zeroed, e.g. 0.1");
  if (!training || p == 0.0) return x;
  dispatch_floating(x.dtype(), "dropout", [](auto) {});  // dtype check before drawing anything
  Tensor xc = contiguous(x);
  Tensor y;
  auto node = std::make_shared<DropoutBackward>();
  node->p = p;
  if (p == 1.0) {
    y = Tensor::zeros(x.shape(), x.dtype(), x.device());
  } else {
    const int64_t n = xc.numel();
    node->seed = gen.seed();
    node->first_block = gen.reserve(uint64_t((n + 3) / 4));
    y = Tensor::empty(x.shape(), x.dtype(), x.device());
    be.dropout_forward(x.dtype(), xc.raw_data(), y.raw_data(), n, p, node->seed, node->first_block);
  }
  if (needs_grad(xc)) record(node, {xc}, {y});
  return y;
}

}  // namespace automodel::ops
