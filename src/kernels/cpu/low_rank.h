#pragma once
// Products with one side as narrow as a LoRA rank: the adapter's expand (C += U V) and reduce
// (D = U^T X) steps. A general GEMM spends more on packing and blocking these memory-bound
// products than they cost; here the rank side stays in registers while the wide side streams through
// (once per 8 ranks).
// fp32 accumulation; f32 or bf16 storage.
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

// The largest rank these take; beyond it a GEMM's blocking pays off.
constexpr int64_t kLowRankMax = 16;

// C [M, N] (row stride ldc) = beta * C + alpha * U V with U [M, r] (row stride ldu) and V [r, N]
// read as V(i, n) = V[i * vs0 + n * vs1]; beta is 0 or 1.
template <class T>
void low_rank_expand(int64_t M, int64_t N, int64_t r, float alpha, const T* U, int64_t ldu, const T* V, int64_t vs0,
                     int64_t vs1, float beta, T* C, int64_t ldc);

// D(i, n) = alpha * sum_m U[m, i] X[m, n] for i < r, n < N, stored at D[i * ds0 + n * ds1];
// U [M, r] (row stride ldu), X [M, N] (row stride ldx).
template <class T>
void low_rank_reduce(int64_t M, int64_t N, int64_t r, float alpha, const T* U, int64_t ldu, const T* X, int64_t ldx,
                     T* D, int64_t ds0, int64_t ds1);

}  // namespace automodel::cpu
