#include "ops/graph.h"

#include "ops/backend.h"
#include "ops/dispatch.h"

namespace automodel::ops {

namespace {
// A leaf's gradient sink. Holds its tensor weakly: the tensor owns it, not the other way round.
struct AccumulateGrad : Node {
  std::weak_ptr<TensorImpl> variable;
  std::string name() const override { return "AccumulateGrad"; }
  bool reusable() const override { return true; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    if (auto impl = variable.lock()) accumulate_grad(Tensor(impl), grads[0]);
    return {};
  }
};

Tensor contiguous_copy(const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), t.dtype(), t.device());
  backend_of("gradient copy", t)
      .strided_copy(t.raw_data(), t.strides().data(), out.raw_data(), out.strides().data(), t.shape().data(),
                    int(t.dim()), dtype_size(t.dtype()));
  return out;
}
}  // namespace

Edge gradient_edge(const Tensor& t) {
  if (!t.defined()) return {};
  TensorImpl* impl = t.impl();
  if (impl->grad_fn) return {impl->grad_fn, impl->output_nr};
  if (!impl->requires_grad) return {};
  if (!impl->grad_accumulator) {
    auto acc = std::make_shared<AccumulateGrad>();
    acc->variable = t.impl_ptr();
    acc->outputs.push_back({t.shape(), t.dtype(), t.device()});
    impl->grad_accumulator = acc;
  }
  return {impl->grad_accumulator, 0};
}

void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs) {
  node->next_edges.clear();
  for (const Tensor& t : inputs) node->next_edges.push_back(gradient_edge(t));
  node->outputs.clear();
  for (uint32_t i = 0; i < outputs.size(); ++i) {
    TensorImpl* impl = outputs[i].impl();
    node->outputs.push_back({impl->shape, impl->dtype, impl->storage->device()});
    impl->grad_fn = node;
    impl->output_nr = i;
    impl->requires_grad = true;
  }
}

Tensor add_same_shape(const Tensor& a, const Tensor& b) {
  AM_CHECK(a.shape() == b.shape() && a.dtype() == b.dtype(), "gradient sum of ", a.describe(), " and ", b.describe());
  const kernels::Backend& be = backend_of("gradient sum", a, b);
  dispatch_floating(a.dtype(), "gradient sum", [](auto) {});
  Tensor ac = a.is_contiguous() ? a : contiguous_copy(a);
  Tensor bc = b.is_contiguous() ? b : contiguous_copy(b);
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  be.add_same_shape(a.dtype(), ac.raw_data(), bc.raw_data(), out.raw_data(), out.numel());
  return out;
}

void accumulate_grad(const Tensor& t, const Tensor& g) {
  if (!g.defined()) return;
  AM_CHECK(g.shape() == t.shape(), "gradient of shape ", shape_str(g.shape()), " for a tensor of shape ",
           shape_str(t.shape()));
  AM_CHECK(g.dtype() == t.dtype(), "gradient dtype ", dtype_name(g.dtype()), " for a ", dtype_name(t.dtype()),
           " tensor");
  Tensor existing = t.grad();
  if (!existing.defined()) {
    // Always a private copy: g may be shared with other gradients or saved tensors.
    t.set_grad(contiguous_copy(g));
    return;
  }
  AM_CHECK(existing.is_contiguous(), "accumulating into a non-contiguous .grad");
  AM_CHECK(existing.dtype() == g.dtype() && existing.shape() == g.shape(), "accumulating a ", g.describe(),
           " gradient into a .grad of ", existing.describe());
  const kernels::Backend& be = backend_of("accumulate_grad", existing, g);
  dispatch_floating(existing.dtype(), "accumulate_grad", [](auto) {});
  Tensor gc = g.is_contiguous() ? g : contiguous_copy(g);
  be.add_same_shape(existing.dtype(), existing.raw_data(), gc.raw_data(), existing.raw_data(), existing.numel());
}

}  // namespace automodel::ops
