#pragma once
// LoRA linear as one fused pair of kernels: y = x W^T + bias + scale * B(A(x)) with dropout on the
// adapter branch, built from GEMMs that accumulate into y (beta = 1) so the adapter never costs a
// separate pass over y, and a backward that never forms the [out, in] product B A.
#include <cstdint>

#include "core/dtype.h"
#include "kernels/shapes.h"

namespace automodel::cpu {

using kernels::LoraDims;
using kernels::LoraDropout;  // cpu::dropout_forward's Philox mapping

// y [rows, out] = x W^T + bias + scale * drop(x) A^T B^T (pre) or + drop(scale * x A^T B^T) (post).
// W [out, in], bias [out] (may be null), A [rank, in], B [out, rank], all row-major contiguous.
// u [rows, rank] receives drop(x) A^T (pre) or x A^T (post), which the backward needs.
// Overloads: everything f32, f64 or bf16 (bf16 with fp32 accumulation); and a frozen bf16 base
// (W, bias bf16) under f32 activations and adapters: that base GEMM runs on oneDNN's bf16 path with
// x rounded to bf16 and an fp32 result (what autocast does), the adapter branch stays f32.
void lora_linear_forward(const float* x, const float* w, const float* bias, const float* a, const float* b,
                         const LoraDims& d, double scale, const LoraDropout& drop, float* u, float* y);
void lora_linear_forward(const double* x, const double* w, const double* bias, const double* a, const double* b,
                         const LoraDims& d, double scale, const LoraDropout& drop, double* u, double* y);
void lora_linear_forward(const bf16* x, const bf16* w, const bf16* bias, const bf16* a, const bf16* b,
                         const LoraDims& d, double scale, const LoraDropout& drop, bf16* u, bf16* y);
void lora_linear_forward(const float* x, const bf16* w, const bf16* bias, const float* a, const float* b,
                         const LoraDims& d, double scale, const LoraDropout& drop, float* u, float* y);

// Gradients from g = dL/dy [rows, out]; x, u as in the forward. Each output may be null (not
// wanted): dx [rows, in], da [rank, in], db [out, rank], dw [out, in], dbias [out]. w is read only
// for dx, x for da / dw, u for db. The mixed overload has no dw / dbias (its base is frozen).
void lora_linear_backward(const float* g, const float* x, const float* w, const float* a, const float* b,
                          const float* u, const LoraDims& d, double scale, const LoraDropout& drop, float* dx,
                          float* da, float* db, float* dw, float* dbias);
void lora_linear_backward(const double* g, const double* x, const double* w, const double* a, const double* b,
                          const double* u, const LoraDims& d, double scale, const LoraDropout& drop, double* dx,
                          double* da, double* db, double* dw, double* dbias);
void lora_linear_backward(const bf16* g, const bf16* x, const bf16* w, const bf16* a, const bf16* b, const bf16* u,
                          const LoraDims& d, double scale, const LoraDropout& drop, bf16* dx, bf16* da, bf16* db,
                          bf16* dw, bf16* dbias);
void lora_linear_backward(const float* g, const float* x, const bf16* w, const float* a, const float* b, const float* u,
                          const LoraDims& d, double scale, const LoraDropout& drop, float* dx, float* da, float* db);

}  // namespace automodel::cpu
