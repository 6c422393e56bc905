#pragma once
// The optimizers' element-wise kernels: the Adam / AdamW and SGD updates, the gradient prologue of the fused
// training step (its 2-norm partial sum and clipping), clip_grad_norm's norm, and the split fp32 masters of bf16
// parameters (master_split.h). Each element is computed in the order torch's single-tensor implementation computes
// it, so the results are bit for bit those of the flat-buffer and per-tensor paths alike. Compiled with
// -fno-math-errno -ffp-contract=off (CMakeLists.txt): every operation rounds as written.
#include <cstdint>

#include "core/dtype.h"
#include "kernels/shapes.h"

namespace automodel::cpu {

// One Adam / AdamW step of n elements: p (p_dt f32, f64 or bf16; f32 for a master), g (g_dt: p_dt, or bf16 under an
// f32 master), m and v (exp_avg, exp_avg_sq) in the compute type.
void adam_update(DType p_dt, DType g_dt, const kernels::AdamStep& s, void* p, const void* g, void* m, void* v,
                 int64_t n);
// One SGD step; buf (momentum_buffer, compute type) is read and written for momentum kinds 1 and 2.
void sgd_update(DType p_dt, DType g_dt, const kernels::SgdStep& s, void* p, const void* g, void* buf, int64_t n);

// Before an update reads a tile of gradients g (dt f32, f64 or bf16): adds their sum of squares (fp64) to *sum_sq
// when it is not null, and with `scale` multiplies them in place by coef (in the gradient's compute type).
void grad_prologue(DType dt, void* g, int64_t n, double* sum_sq, bool scale, double coef);
// clip_grad_norm's part of one gradient tensor: max |g| (norm_type infinity), sum g^2 (2) or sum |g|^norm_type, in
// fp64 by one OpenMP reduction.
double grad_norm_power(DType dt, const void* g, int64_t n, double norm_type);

// The split masters (master_split.h) over arrays: p bf16 parameters, r 16-bit residuals.
void master_reconstruct(const void* p, const void* r, float* x, int64_t n);
// Splits x into p and r; returns how many elements do not restore bit for bit and writes their indices to failures
// (room for n).
int64_t master_split(const float* x, void* p, void* r, int64_t n, int64_t* failures);
// master::stochastic_round_n into bf16 p.
void stochastic_round(const float* x, void* p, int64_t n, uint32_t key, int64_t first);

}  // namespace automodel::cpu
