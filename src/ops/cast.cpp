#include "ops/cast.h"

#include "ops/backend.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

struct ToDtypeBackward : Node {
  DType input_dtype = DType::f32;
  std::string name() const override { return "ToDtypeBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    if (!g[0].defined()) return {Tensor()};
    return {to_dtype(g[0], input_dtype)};
  }
};

}  // namespace

Tensor to_dtype(const Tensor& x, DType dtype) {
  check_defined(x, "to_dtype", "x");
  const kernels::Backend& be = backend_of("to_dtype", x);
  if (x.dtype() == dtype) return x;
  Tensor src = x.is_contiguous() ? x : contiguous(x.detach());
  Tensor out = Tensor::empty(x.shape(), dtype, x.device());
  be.cast(src.raw_data(), src.dtype(), out.raw_data(), dtype, out.numel());
  // Gradients flow only between floating dtypes (an integer result has no gradient).
  if (is_floating(dtype) && needs_grad(x)) {
    auto node = std::make_shared<ToDtypeBackward>();
    node->input_dtype = x.dtype();
    record(node, {x}, {out});
  }
  return out;
}

}  // namespace automodel::ops
