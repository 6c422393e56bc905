#pragma once
// GPT-OSS's expert activation (transformers' GptOssExperts._apply_gate): from a gate_up row whose even columns are the
// gate and odd columns the up projection (interleaved), gate = min(gate, limit), up = clamp(up, -limit, limit) and
//   y = (up + 1) * gate * sigmoid(alpha * gate).
// n counts the outputs: gate_up holds 2n values, pair i at (2i, 2i + 1). The backward recomputes from gate_up and
// writes d gate_up; a clamped value gets no gradient (torch's clamp passes it at the bound itself).
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

void clamped_swiglu_forward(const float* gate_up, float* y, int64_t n, double alpha, double limit);
void clamped_swiglu_forward(const double* gate_up, double* y, int64_t n, double alpha, double limit);
void clamped_swiglu_forward(const bf16* gate_up, bf16* y, int64_t n, double alpha, double limit);
void clamped_swiglu_backward(const float* gate_up, const float* g, float* dgate_up, int64_t n, double alpha,
                             double limit);
void clamped_swiglu_backward(const double* gate_up, const double* g, double* dgate_up, int64_t n, double alpha,
                             double limit);
void clamped_swiglu_backward(const bf16* gate_up, const bf16* g, bf16* dgate_up, int64_t n, double alpha, double limit);

}  // namespace automodel::cpu
