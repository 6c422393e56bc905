#pragma once
// Pointwise activations (and rsqrt, which RMSNorm composed of primitive ops needs).
#include "core/tensor.h"

namespace automodel::ops {

Tensor silu(const Tensor& x);
Tensor gelu(const Tensor& x, bool tanh_approximation = false);  // exact erf form by default
// silu(gate) * up, fused (one pass, nothing intermediate kept but the inputs).
Tensor swiglu(const Tensor& gate, const Tensor& up);
// gelu_tanh(gate) * up (Gemma's MLP), fused the same way.
Tensor geglu_tanh(const Tensor& gate, const Tensor& up);
// cap * tanh(x / cap): Gemma 2's logit soft-capping.
Tensor softcap(const Tensor& x, double cap);
// 1 / sqrt(x).
Tensor rsqrt(const Tensor& x);

}  // namespace automodel::ops
