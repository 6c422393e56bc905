#include "nn/linear.h"

#include <cmath>

#include "core/error.h"
#include "core/rng.h"
#include "nn/init.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "ops/dropout.h"
#include "ops/matmul.h"

namespace automodel::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias, DType dtype) {
  double bound = 1.0 / std::sqrt(double(in_features));
  auto make = [&](const Shape& shape) {
    return init_enabled() ? rand_uniform(shape, -bound, bound, default_generator(), dtype)
                          : Tensor::empty(shape, dtype);
  };
  weight = make({out_features, in_features});
  weight.set_requires_grad(true);
  register_parameter("weight", &weight);
  if (with_bias) {
    bias = make({out_features});
    bias.set_requires_grad(true);
    register_parameter("bias", &bias);
  }
}

void Linear::attach_lora(const Tensor& lora_a, const Tensor& lora_b, const LoraSettings& settings) {
  AM_CHECK(lora_a.defined() && lora_b.defined() && lora_a.dim() == 2 && lora_b.dim() == 2 &&
               lora_a.size(1) == in_features() && lora_b.size(0) == out_features() &&
               lora_b.size(1) == lora_a.size(0) && lora_a.size(0) >= 1,
           "Linear::attach_lora: lora_A ", lora_a.describe(), " and lora_B ", lora_b.describe(), " do not fit weight ",
           weight.describe(), " (expected [r, ", in_features(), "] and [", out_features(), ", r], r >= 1)");
  AM_CHECK(lora_a.dtype() == lora_b.dtype(), "Linear::attach_lora: lora_A ", lora_a.describe(), " and lora_B ",
           lora_b.describe(), " differ in dtype");
  if (!lora_a_) {
    lora_a_ = register_module("lora_A", std::make_shared<LoraWeight>());
    lora_b_ = register_module("lora_B", std::make_shared<LoraWeight>());
  }
  lora_a_->weight = lora_a;
  lora_b_->weight = lora_b;
  lora_a_->weight.set_requires_grad(true);
  lora_b_->weight.set_requires_grad(true);
  lora_ = settings;
}

void Linear::detach_lora() {
  if (!lora_a_) return;
  lora_a_->weight = Tensor();
  lora_b_->weight = Tensor();
}

Tensor Linear::forward(const Tensor& x) const {
  if (!has_lora()) return ops::linear(x, weight, bias);
  const DType dt = lora_a_->weight.dtype();
  // The op takes one dtype throughout, or a bf16 base under f32 adapters; anything else is cast.
  const bool base_ok = weight.dtype() == dt || (weight.dtype() == DType::bf16 && dt == DType::f32);
  Tensor w = base_ok ? weight : ops::to_dtype(weight, dt);
  Tensor b = !bias.defined() || base_ok ? bias : ops::to_dtype(bias, dt);
  if (!fused) {
    Tensor xd = ops::to_dtype(x, dt);
    Generator& gen = lora_.generator ? *lora_.generator : default_generator();
    const bool pre = lora_.dropout_position == ops::LoraDropoutPosition::pre;
    Tensor branch = ops::linear(pre ? ops::dropout(xd, lora_.dropout, lora_.training, gen) : xd, lora_a_->weight);
    branch = ops::scale(ops::linear(branch, lora_b_->weight), lora_.scale);
    if (!pre) branch = ops::dropout(branch, lora_.dropout, lora_.training, gen);
    Tensor base = ops::to_dtype(ops::linear(ops::to_dtype(x, w.dtype()), w, b), dt);
    return ops::to_dtype(ops::add(base, branch), x.dtype());
  }
  ops::LoraOptions options;
  options.scale = lora_.scale;
  options.dropout = lora_.dropout;
  options.dropout_position = lora_.dropout_position;
  options.training = lora_.training;
  options.generator = lora_.generator;
  Tensor y = ops::lora_linear(ops::to_dtype(x, dt), w, b, lora_a_->weight, lora_b_->weight, options);
  return ops::to_dtype(y, x.dtype());
}

}  // namespace automodel::nn
