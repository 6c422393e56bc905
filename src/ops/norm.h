#pragma once
// Normalisations over the last dim, statistics in fp32 (f64 for f64 inputs).
#include <utility>

#include "core/tensor.h"

namespace automodel::ops {

// x / sqrt(mean(x^2) + eps) * w, or * (1 + w) with unit_offset (Gemma). weight may be undefined
// (no affine).
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps, bool unit_offset = false);
// The residual add fused in front of an RMSNorm: {sum, rms_norm(sum)} with sum = x + residual, in
// one pass (one node; its backward adds the residual stream's gradient into the norm's dx).
std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& weight, double eps,
                                       bool unit_offset = false);
// (x - mean) / sqrt(var + eps) * w + b; weight and bias may be undefined.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);

}  // namespace automodel::ops
