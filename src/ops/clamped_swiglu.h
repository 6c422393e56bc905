#pragma once
// GPT-OSS's expert activation (kernels/cpu/clamped_swiglu.h) as a differentiable op.
#include "core/tensor.h"

namespace automodel::ops {

// gate_up [..., 2I] with the gate in the even columns and the up projection in the odd ones (transformers'
// gate_up[..., ::2] / [..., 1::2]) -> [..., I]: (clamp(up, -limit, limit) + 1) * g * sigmoid(alpha * g) with
// g = min(gate, limit). Differentiable in gate_up; limit must be positive and finite, alpha finite.
Tensor clamped_swiglu(const Tensor& gate_up, double alpha, double limit);

}  // namespace automodel::ops
