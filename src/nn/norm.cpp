#include "nn/norm.h"

#include "nn/eager.h"
#include "ops/binary.h"
#include "ops/norm.h"

namespace automodel::nn {

RMSNorm::RMSNorm(int64_t dim, double eps_, bool unit_offset_, DType dtype) : eps(eps_), unit_offset(unit_offset_) {
  weight = Tensor::full({dim}, unit_offset ? 0.0 : 1.0, dtype);
  weight.set_requires_grad(true);
  register_parameter("weight", &weight);
}

Tensor RMSNorm::forward(const Tensor& x) const {
  return fused ? ops::rms_norm(x, weight, eps, unit_offset) : rms_norm_eager(x, weight, eps, unit_offset);
}

std::pair<Tensor, Tensor> RMSNorm::forward_residual(const Tensor& x, const Tensor& residual) const {
  if (fused) return ops::add_rms_norm(x, residual, weight, eps, unit_offset);
  Tensor sum = ops::add(x, residual);
  return {sum, forward(sum)};
}

LayerNorm::LayerNorm(int64_t dim, double eps_, bool with_bias, DType dtype) : eps(eps_) {
  weight = Tensor::ones({dim}, dtype);
  weight.set_requires_grad(true);
  register_parameter("weight", &weight);
  if (with_bias) {
    bias = Tensor::zeros({dim}, dtype);
    bias.set_requires_grad(true);
    register_parameter("bias", &bias);
  }
}

Tensor LayerNorm::forward(const Tensor& x) const { return ops::layer_norm(x, weight, bias, eps); }

}  // namespace automodel::nn
