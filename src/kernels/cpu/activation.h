#pragma once
// Pointwise activations: silu, gelu (erf or tanh form), the fused gated forms swiglu / geglu_tanh,
// soft-capping, and rsqrt (for RMSNorm composed of primitive ops). Backward kernels recompute from the saved inputs
// (nothing intermediate kept).
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

// y = x * sigmoid(x)
void silu_forward(const float* x, float* y, int64_t n);
void silu_forward(const double* x, double* y, int64_t n);
void silu_forward(const bf16* x, bf16* y, int64_t n);
void silu_backward(const float* x, const float* g, float* gx, int64_t n);
void silu_backward(const double* x, const double* g, double* gx, int64_t n);
void silu_backward(const bf16* x, const bf16* g, bf16* gx, int64_t n);

// y = x * Phi(x) (erf form) or torch's approximate='tanh' form.
void gelu_forward(const float* x, float* y, int64_t n, bool tanh_approx);
void gelu_forward(const double* x, double* y, int64_t n, bool tanh_approx);
void gelu_forward(const bf16* x, bf16* y, int64_t n, bool tanh_approx);
void gelu_backward(const float* x, const float* g, float* gx, int64_t n, bool tanh_approx);
void gelu_backward(const double* x, const double* g, double* gx, int64_t n, bool tanh_approx);
void gelu_backward(const bf16* x, const bf16* g, bf16* gx, int64_t n, bool tanh_approx);

// y = act(gate) * up with act = silu (swiglu) or gelu_tanh (geglu_tanh); the backward writes
// d gate and d up (either may be null) from gate, up and g.
void swiglu_forward(const float* gate, const float* up, float* y, int64_t n);
void swiglu_forward(const double* gate, const double* up, double* y, int64_t n);
void swiglu_forward(const bf16* gate, const bf16* up, bf16* y, int64_t n);
void swiglu_backward(const float* gate, const float* up, const float* g, float* ggate, float* gup, int64_t n);
void swiglu_backward(const double* gate, const double* up, const double* g, double* ggate, double* gup, int64_t n);
void swiglu_backward(const bf16* gate, const bf16* up, const bf16* g, bf16* ggate, bf16* gup, int64_t n);
void geglu_tanh_forward(const float* gate, const float* up, float* y, int64_t n);
void geglu_tanh_forward(const double* gate, const double* up, double* y, int64_t n);
void geglu_tanh_forward(const bf16* gate, const bf16* up, bf16* y, int64_t n);
void geglu_tanh_backward(const float* gate, const float* up, const float* g, float* ggate, float* gup, int64_t n);
void geglu_tanh_backward(const double* gate, const double* up, const double* g, double* ggate, double* gup, int64_t n);
void geglu_tanh_backward(const bf16* gate, const bf16* up, const bf16* g, bf16* ggate, bf16* gup, int64_t n);

// y = cap * tanh(x / cap); backward from x.
void softcap_forward(const float* x, float* y, int64_t n, double cap);
void softcap_forward(const double* x, double* y, int64_t n, double cap);
void softcap_forward(const bf16* x, bf16* y, int64_t n, double cap);
void softcap_backward(const float* x, const float* g, float* gx, int64_t n, double cap);
void softcap_backward(const double* x, const double* g, double* gx, int64_t n, double cap);
void softcap_backward(const bf16* x, const bf16* g, bf16* gx, int64_t n, double cap);

// y = 1 / sqrt(x); backward from x.
void rsqrt_forward(const float* x, float* y, int64_t n);
void rsqrt_forward(const double* x, double* y, int64_t n);
void rsqrt_forward(const bf16* x, bf16* y, int64_t n);
void rsqrt_backward(const float* x, const float* g, float* gx, int64_t n);
void rsqrt_backward(const double* x, const double* g, double* gx, int64_t n);
void rsqrt_backward(const bf16* x, const bf16* g, bf16* gx, int64_t n);

}  // namespace automodel::cpu
