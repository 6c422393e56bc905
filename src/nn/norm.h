#pragma once
// Normalisation layers: RMSNorm (Llama; Gemma's (1 + w) with unit_offset) and LayerNorm.
#include <utility>

#include "nn/module.h"

namespace automodel::nn {

class RMSNorm : public Module {
 public:
  // weight starts at ones (zeros with unit_offset, so both start as the identity scale).
  RMSNorm(int64_t dim, double eps = 1e-6, bool unit_offset = false, DType dtype = DType::f32);
  Tensor forward(const Tensor& x) const;
  // {sum, forward(sum)} with sum = x + residual: one fused pass (or, unfused, an add and the norm).
  std::pair<Tensor, Tensor> forward_residual(const Tensor& x, const Tensor& residual) const;

  Tensor weight;
  double eps;
  bool unit_offset;
  bool fused = true;  // false: rms_norm_eager (transformers' composition of primitive ops)
};

class LayerNorm : public Module {
 public:
  LayerNorm(int64_t dim, double eps = 1e-5, bool bias = true, DType dtype = DType::f32);
  Tensor forward(const Tensor& x) const;

  Tensor weight, bias;
  double eps;
};

}  // namespace automodel::nn
