#pragma once
// Row-major GEMM: C[M, N] = alpha * op(A) @ op(B) + beta * C, op(X) = X or X^T.
//   op(A) is [M, K]: A is stored [M, K] (ta false) or [K, M] (ta true), rows lda apart.
//   op(B) is [K, N]: B is stored [K, N] (tb false) or [N, K] (tb true), rows ldb apart.
//   C is [M, N], rows ldc apart. beta == 0 never reads C (it may hold garbage or NaN).
// float and bf16 inputs go through oneDNN (bf16: fp32 accumulation, an f32 or bf16 output), double through
// OpenBLAS (cblas_dgemm). oneDNN primitives are cached per shape.
// `bias` (optional, length N, added to every row of C) is allowed only with beta == 0 and alpha == 1.
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc, const float* bias = nullptr);
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc, const double* bias = nullptr);
// bf16 inputs, fp32 accumulation, f32 output (beta == 1 accumulates into C exactly in fp32).
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, int64_t lda, const bf16* B,
          int64_t ldb, float beta, float* C, int64_t ldc, const bf16* bias = nullptr);
// bf16 inputs, fp32 accumulation, one rounding to bf16 at the end.
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, int64_t lda, const bf16* B,
          int64_t ldb, float beta, bf16* C, int64_t ldc, const bf16* bias = nullptr);

// Batched: for i in [0, batch): C + c_off[i] = alpha * op(A + a_off[i]) @ op(B + b_off[i]) + beta * (C + c_off[i]).
// Offsets are in elements; a_off / b_off may repeat (broadcast operands), c_off must not. float and
// bf16: offsets in arithmetic progression run as one oneDNN batched matmul, others one GEMM after
// another, each threaded. double: small matrices run in parallel over the batch.
void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, const int64_t* a_off,
                  int64_t lda, const float* B, const int64_t* b_off, int64_t ldb, float beta, float* C,
                  const int64_t* c_off, int64_t ldc, int64_t batch);
void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                  const int64_t* a_off, int64_t lda, const double* B, const int64_t* b_off, int64_t ldb, double beta,
                  double* C, const int64_t* c_off, int64_t ldc, int64_t batch);
void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, const int64_t* a_off,
                  int64_t lda, const bf16* B, const int64_t* b_off, int64_t ldb, float beta, float* C,
                  const int64_t* c_off, int64_t ldc, int64_t batch);
void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, const int64_t* a_off,
                  int64_t lda, const bf16* B, const int64_t* b_off, int64_t ldb, float beta, bf16* C,
                  const int64_t* c_off, int64_t ldc, int64_t batch);

// out[n] (+)= sum over rows of x[rows, n] (row stride ld); accumulate adds to out, else overwrites.
// The column sums behind a bias gradient; bf16 sums in fp32.
void column_sums(const float* x, int64_t rows, int64_t cols, int64_t ld, float* out, bool accumulate = false);
void column_sums(const double* x, int64_t rows, int64_t cols, int64_t ld, double* out, bool accumulate = false);
void column_sums(const bf16* x, int64_t rows, int64_t cols, int64_t ld, bf16* out, bool accumulate = false);

// Number of cached oneDNN primitives (for tests and diagnostics).
int64_t gemm_primitive_cache_size();

}  // namespace automodel::cpu
