#include "kernels/cpu/low_rank.h"

#include <algorithm>

#include "core/error.h"
#include "core/threads.h"
#include "kernels/cpu/scratch.h"
#include "kernels/cpu/vec16.h"

namespace automodel::cpu {

namespace {

using namespace vec16;

constexpr int kGroup = 8;  // ranks per unrolled step; a reduce keeps kGroup x 2 accumulators in registers
constexpr int kCols = 32;  // columns per block: two vectors

// U [M, r] in fp32 times scale into out [M, rp] (zeroed: ranks past r stay 0).
template <class T>
void rank_side(int64_t M, int64_t r, int64_t rp, float scale, const T* U, int64_t ldu, float* out) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t i = 0; i < r; ++i) out[m * rp + i] = scale * to_compute(U[m * ldu + i]);
}

// Blocks of kCols columns split across threads when the product is worth a parallel region.
template <class F>
void over_column_blocks(int64_t M, int64_t N, int64_t r, F&& block) {
  const int64_t blocks = (N + kCols - 1) / kCols;
  const int64_t grain = M * N * r < (int64_t(1) << 17) ? blocks : 1;
  parallel_for(blocks, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) block(b * kCols, std::min<int64_t>(kCols, N - b * kCols));
  });
}

}  // namespace

template <class T>
void low_rank_expand(int64_t M, int64_t N, int64_t r, float alpha, const T* U, int64_t ldu, const T* V, int64_t vs0,
                     int64_t vs1, float beta, T* C, int64_t ldc) {
  AM_CHECK(M >= 0 && N >= 0 && r >= 0 && r <= kLowRankMax && (beta == 0 || beta == 1), "low_rank_expand: M=", M,
           " N=", N, " r=", r, " beta=", beta);
  if (M == 0 || N == 0) return;
  const int64_t rp = (r + kGroup - 1) / kGroup * kGroup;
  Scratch<float> uf(M * rp);
  rank_side(M, r, rp, alpha, U, ldu, uf.data());
  over_column_blocks(M, N, r, [&](int64_t n0, int64_t nc) {
    float vblk[kLowRankMax * kCols] = {};  // V's block in fp32, ranks x columns, zero past r
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < nc; ++j) vblk[i * kCols + j] = to_compute(V[i * vs0 + (n0 + j) * vs1]);
    if (nc < kCols) {  // the last, partial block
      for (int64_t m = 0; m < M; ++m)
        for (int64_t j = 0; j < nc; ++j) {
          T* c = C + m * ldc + n0 + j;
          float acc = beta == 0 ? 0.0f : to_compute(*c);
          for (int64_t i = 0; i < r; ++i) acc += uf.data()[m * rp + i] * vblk[i * kCols + j];
          *c = from_compute<T>(acc);
        }
      return;
    }
    for (int64_t m = 0; m < M; ++m) {
      T* c = C + m * ldc + n0;
      const float* u = uf.data() + m * rp;
      vf acc0 = beta == 0 ? vf{} : load(c), acc1 = beta == 0 ? vf{} : load(c + 16);
      for (int64_t g = 0; g < rp; g += kGroup) {
#pragma GCC unroll 8
        for (int i = 0; i < kGroup; ++i) {
          acc0 += u[g + i] * load(vblk + (g + i) * kCols);
          acc1 += u[g + i] * load(vblk + (g + i) * kCols + 16);
        }
      }
      store(c, acc0);
      store(c + 16, acc1);
    }
  });
}

template <class T>
void low_rank_reduce(int64_t M, int64_t N, int64_t r, float alpha, const T* U, int64_t ldu, const T* X, int64_t ldx,
                     T* D, int64_t ds0, int64_t ds1) {
  AM_CHECK(M >= 0 && N >= 0 && r >= 0 && r <= kLowRankMax, "low_rank_reduce: M=", M, " N=", N, " r=", r);
  if (N == 0 || r == 0) return;
  const int64_t rp = (r + kGroup - 1) / kGroup * kGroup;
  Scratch<float> uf(M * rp);
  rank_side(M, r, rp, 1.0f, U, ldu, uf.data());
  over_column_blocks(M, N, r, [&](int64_t n0, int64_t nc) {
    for (int64_t g = 0; g < rp; g += kGroup) {
      float out[kGroup][kCols] = {};
      if (nc < kCols) {
        for (int64_t m = 0; m < M; ++m)
          for (int64_t i = 0; i < kGroup; ++i)
            for (int64_t j = 0; j < nc; ++j) out[i][j] += uf.data()[m * rp + g + i] * to_compute(X[m * ldx + n0 + j]);
      } else {
        vf acc[kGroup][2] = {};
        for (int64_t m = 0; m < M; ++m) {
          const vf x0 = load(X + m * ldx + n0), x1 = load(X + m * ldx + n0 + 16);
          const float* u = uf.data() + m * rp + g;
#pragma GCC unroll 8
          for (int i = 0; i < kGroup; ++i) {
            acc[i][0] += u[i] * x0;
            acc[i][1] += u[i] * x1;
          }
        }
        for (int i = 0; i < kGroup; ++i) {
          store(out[i], acc[i][0]);
          store(out[i] + 16, acc[i][1]);
        }
      }
      for (int64_t i = g; i < std::min(r, g + kGroup); ++i)
        for (int64_t j = 0; j < nc; ++j) D[i * ds0 + (n0 + j) * ds1] = from_compute<T>(alpha * out[i - g][j]);
    }
  });
}

template void low_rank_expand<float>(int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                                     int64_t, float, float*, int64_t);
template void low_rank_expand<bf16>(int64_t, int64_t, int64_t, float, const bf16*, int64_t, const bf16*, int64_t,
                                    int64_t, float, bf16*, int64_t);
template void low_rank_reduce<float>(int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                                     float*, int64_t, int64_t);
template void low_rank_reduce<bf16>(int64_t, int64_t, int64_t, float, const bf16*, int64_t, const bf16*, int64_t, bf16*,
                                    int64_t, int64_t);

}  // namespace automodel::cpu
