#include "ops/softmax.h"

#include "ops/backend.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

struct Layout3 {
  int64_t outer = 1, dim = 1, inner = 1;
};

// [outer, dim, inner] around dim d of shape (a 0-dim tensor counts as [1]).
Layout3 layout_around(const Shape& shape, int64_t d) {
  Layout3 l;
  if (shape.empty()) return l;
  for (int64_t i = 0; i < int64_t(shape.size()); ++i) {
    if (i < d) l.outer *= shape[size_t(i)];
    if (i == d) l.dim = shape[size_t(i)];
    if (i > d) l.inner *= shape[size_t(i)];
  }
  return l;
}

struct SoftmaxBackward : Node {
  bool log;
  Layout3 l;
  Tensor saved;  // the (detached) output; for bf16 the input (the backward recomputes in fp32)
  std::string name() const override { return log ? "LogSoftmaxBackward" : "SoftmaxBackward"; }
  void release_saved() override { saved = Tensor(); }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(saved.defined(), name(), ": saved output already released (backward run twice without retain_graph?)");
    Tensor g = contiguous(grads[0]);
    AM_CHECK(g.dtype() == saved.dtype() && g.shape() == saved.shape(), name(), ": gradient ", g.describe(), " for ",
             saved.describe());
    const kernels::Backend& be = backend_of(log ? "log_softmax" : "softmax", saved, g);
    Tensor gx = Tensor::empty(saved.shape(), saved.dtype(), saved.device());
    auto kernel = saved.dtype() == DType::bf16 ? be.softmax_backward_from_input : be.softmax_backward;
    kernel(saved.dtype(), saved.raw_data(), g.raw_data(), gx.raw_data(), l.outer, l.dim, l.inner, log);
    return {gx};
  }
};

Tensor softmax_impl(const Tensor& x, int64_t dim, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  check_defined(x, name, "x");
  const kernels::Backend& be = backend_of(name, x);
  int64_t d = normalize_dim(dim, std::max<int64_t>(x.dim(), 1), name);
  Layout3 l = layout_around(x.shape(), d);
  Tensor xc = contiguous(x);
  dispatch_floating(x.dtype(), name, [](auto) {});
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  be.softmax_forward(x.dtype(), xc.raw_data(), y.raw_data(), l.outer, l.dim, l.inner, log);
  if (needs_grad(xc)) {
    auto node = std::make_shared<SoftmaxBackward>();
    node->log = log;
    node->l = l;
    node->saved = x.dtype() == DType::bf16 ? xc.detach() : y.detach();
    record(node, {xc}, {y});
  }
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, true); }

}  // namespace automodel::ops
