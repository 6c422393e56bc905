#include "ops/rope.h"

#include <vector>

#include "ops/backend.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

struct RopeBackward : Node {
  Tensor position_ids, inv_freq;  // contiguous i64, f32
  kernels::RopeParams params;
  std::string name() const override { return "RopeBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(grads[0].dtype() == outputs[0].dtype, "rope backward: gradient ", grads[0].describe(), " for a ",
             dtype_name(outputs[0].dtype), " output");
    Tensor g = contiguous(grads[0]);
    AM_CHECK(g.shape() == outputs[0].shape, "rope backward: gradient ", g.describe(), " for an output of shape ",
             shape_str(outputs[0].shape));
    const kernels::Backend& be = backend_of("rope backward", g, position_ids, inv_freq);
    Tensor dx = Tensor::empty(g.shape(), g.dtype(), g.device());
    be.rope_backward(g.dtype(), g.raw_data(), dx.raw_data(), position_ids.data<int64_t>(), inv_freq.data<float>(),
                     params);
    return {dx};
  }
  void release_saved() override { position_ids = inv_freq = Tensor(); }
};

}  // namespace

Tensor rope(const Tensor& x_in, const Tensor& position_ids, const Tensor& inv_freq, RopeStyle style,
            double attention_scaling) {
  const char* op = "rope";
  check_defined(x_in, op, "x");
  check_defined(position_ids, op, "position_ids");
  check_defined(inv_freq, op, "inv_freq");
  const kernels::Backend& be = backend_of(op, x_in, position_ids, inv_freq);
  if (x_in.dim() != 4)
    throw Error(detail::str("rope: x must be [batch, seq, heads, head_dim], got ", x_in.describe()), op);
  const int64_t B = x_in.size(0), T = x_in.size(1), D = x_in.size(3);
  if (position_ids.dtype() != DType::i64)
    throw Error(detail::str("rope: position_ids must be i64, got ", position_ids.describe()), op);
  const bool per_batch = position_ids.dim() == 2 && position_ids.size(0) == B && position_ids.size(1) == T;
  const bool shared = (position_ids.dim() == 1 && position_ids.size(0) == T) ||
                      (position_ids.dim() == 2 && position_ids.size(0) == 1 && position_ids.size(1) == T);
  if (!per_batch && !shared)
    throw Error(detail::str("rope: position_ids must be [", B, ", ", T, "], [1, ", T, "] or [", T, "] for x ",
                            x_in.describe(), ", got ", position_ids.describe()),
                op);
  if (inv_freq.dtype() != DType::f32)
    throw Error(detail::str("rope: inv_freq must be f32, got ", inv_freq.describe()), op,
                "transformers keeps inv_freq in float32; cast it with ops::to_dtype");
  if (inv_freq.dim() != 1 || 2 * inv_freq.size(0) > D)
    throw Error(detail::str("rope: inv_freq must be [R/2] with R <= head_dim ", D, ", got ", inv_freq.describe()), op);
  Tensor x = contiguous(x_in);
  Tensor pos = contiguous(position_ids);
  Tensor freq = contiguous(inv_freq);
  kernels::RopeParams p;
  p.batch = B;
  p.seq = T;
  p.heads = x.size(2);
  p.head_dim = D;
  p.half_rot = freq.size(0);
  p.pos_batch_stride = per_batch ? T : 0;
  p.interleaved = style == RopeStyle::interleaved;
  p.attention_scaling = attention_scaling;
  dispatch_floating(x.dtype(), op, [](auto) {});
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  be.rope_forward(x.dtype(), x.raw_data(), y.raw_data(), pos.data<int64_t>(), freq.data<float>(), p);
  if (needs_grad(x)) {
    auto node = std::make_shared<RopeBackward>();
    node->position_ids = pos;
    node->inv_freq = freq;
    node->params = p;
    record(node, {x}, {y});
  }
  return y;
}

}  // namespace automodel::ops
