#include "ops/topk.h"

#include "ops/backend.h"
#include "ops/cast.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

struct TopKBackward : Node {
  Tensor indices;  // [rows, k] i64
  Shape x_shape;
  int64_t rows = 0, cols = 0, k = 0;
  std::string name() const override { return "TopKBackward"; }
  void release_saved() override { indices = Tensor(); }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(indices.defined(), name(), ": saved indices already released (backward run twice?)");
    const DType dt = outputs[0].dtype;
    Tensor g = grads[0];
    if (g.dtype() != dt) g = to_dtype(g, dt);
    g = contiguous(g);
    const kernels::Backend& be = backend_of("topk backward", g, indices);
    Tensor gx = Tensor::empty(x_shape, dt, g.device());
    be.topk_backward(dt, g.raw_data(), indices.data<int64_t>(), rows, cols, k, gx.raw_data());
    return {gx};
  }
};

}  // namespace

TopK topk(const Tensor& x, int64_t k) {
  check_defined(x, "topk", "x");
  if (x.dim() < 1) throw Error(detail::str("topk: x must have at least one dimension, got ", x.describe()), "topk");
  const int64_t cols = x.size(-1), rows = cols == 0 ? 0 : x.numel() / cols;
  if (k < 1 || k > cols)
    throw Error(detail::str("topk: k = ", k, " is outside [1, ", cols, "] for ", x.describe()), "topk",
                "choose k between 1 and the size of the last dimension");
  dispatch_floating(x.dtype(), "topk", [](auto) {});
  const kernels::Backend& be = backend_of("topk", x);
  Tensor xc = contiguous(x);
  Shape out_shape = x.shape();
  out_shape.back() = k;
  TopK out{Tensor::empty(out_shape, x.dtype(), x.device()), Tensor::empty(out_shape, DType::i64, x.device())};
  be.topk_forward(x.dtype(), xc.raw_data(), rows, cols, k, out.values.raw_data(), out.indices.data<int64_t>());
  if (needs_grad(xc)) {
    auto node = std::make_shared<TopKBackward>();
    node->indices = out.indices;
    node->x_shape = x.shape();
    node->rows = rows, node->cols = cols, node->k = k;
    record(node, {xc}, {out.values});
  }
  return out;
}

}  // namespace automodel::ops
