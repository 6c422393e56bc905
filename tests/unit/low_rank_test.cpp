// kernels/cpu/low_rank: the expand (C = beta C + alpha U V) and reduce (D = alpha U^T X) products
// against a double reference, f32 and bf16, at ranks 0-16, whole and partial column blocks, both
// strides of V and D, and beta 0 (which overwrites NaN) and 1.
#include "kernels/cpu/low_rank.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/rng.h"

using namespace automodel;

namespace {

template <class T>
std::vector<T> random_values(int64_t n, uint64_t seed) {
  Generator gen(seed);
  Tensor t = randn({n}, gen, DType::f64);
  std::vector<T> out;
  for (double v : t.to_doubles()) out.push_back(from_compute<T>(float(v)));
  return out;
}

template <class T>
double value(T v) {
  return double(to_compute(v));
}

// Largest |a - ref| over the largest |ref|.
double rel_err(const std::vector<double>& a, const std::vector<double>& ref) {
  double e = 0, m = 0;
  for (size_t i = 0; i < a.size(); ++i) e = std::max(e, std::abs(a[i] - ref[i])), m = std::max(m, std::abs(ref[i]));
  return m > 0 ? e / m : e;
}

template <class T>
void check_expand(int64_t M, int64_t N, int64_t r, bool v_transposed, float beta, double tol) {
  SCOPED_TRACE(::testing::Message() << "M=" << M << " N=" << N << " r=" << r << " vt=" << v_transposed
                                    << " beta=" << beta);
  const float alpha = 0.75f;
  const std::vector<T> U = random_values<T>(M * r, 1), V = random_values<T>(r * N, 2);
  std::vector<T> C = random_values<T>(M * N, 3);
  if (beta == 0 && !C.empty()) C[0] = from_compute<T>(std::numeric_limits<float>::quiet_NaN());
  const int64_t vs0 = v_transposed ? 1 : N, vs1 = v_transposed ? r : 1;
  std::vector<double> ref(size_t(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = beta == 0 ? 0.0 : value(C[m * N + n]);
      for (int64_t i = 0; i < r; ++i) acc += alpha * value(U[m * r + i]) * value(V[i * vs0 + n * vs1]);
      ref[size_t(m * N + n)] = acc;
    }
  cpu::low_rank_expand(M, N, r, alpha, U.data(), r, V.data(), vs0, vs1, beta, C.data(), N);
  std::vector<double> got;
  for (T c : C) got.push_back(value(c));
  EXPECT_LE(rel_err(got, ref), tol);
}

template <class T>
void check_reduce(int64_t M, int64_t N, int64_t r, bool d_transposed, double tol) {
  SCOPED_TRACE(::testing::Message() << "M=" << M << " N=" << N << " r=" << r << " dt=" << d_transposed);
  const float alpha = -1.5f;
  const std::vector<T> U = random_values<T>(M * r, 4), X = random_values<T>(M * N, 5);
  std::vector<T> D(size_t(r * N), from_compute<T>(std::numeric_limits<float>::quiet_NaN()));
  const int64_t ds0 = d_transposed ? 1 : N, ds1 = d_transposed ? r : 1;
  std::vector<double> ref(size_t(r * N)), got(size_t(r * N));
  for (int64_t i = 0; i < r; ++i)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t m = 0; m < M; ++m) acc += value(U[m * r + i]) * value(X[m * N + n]);
      ref[size_t(i * N + n)] = alpha * acc;
    }
  cpu::low_rank_reduce(M, N, r, alpha, U.data(), r, X.data(), N, D.data(), ds0, ds1);
  for (int64_t i = 0; i < r; ++i)
    for (int64_t n = 0; n < N; ++n) got[size_t(i * N + n)] = value(D[i * ds0 + n * ds1]);
  EXPECT_LE(rel_err(got, ref), tol);
}

// Sizes: whole 32-column blocks, a partial last block, fewer columns than a block; ranks below,
// at and past one group of 8.
const std::vector<std::vector<int64_t>> kShapes = {{64, 96, 8}, {37, 70, 3}, {5, 20, 16}, {128, 33, 9},
                                                   {1, 64, 1},  {9, 32, 0},  {0, 40, 4}};

}  // namespace

TEST(LowRank, ExpandMatchesReference) {
  for (const auto& s : kShapes)
    for (bool vt : {false, true})
      for (float beta : {0.0f, 1.0f}) {
        check_expand<float>(s[0], s[1], s[2], vt, beta, 1e-6);
        check_expand<bf16>(s[0], s[1], s[2], vt, beta, 1e-2);
      }
}

TEST(LowRank, ReduceMatchesReference) {
  for (const auto& s : kShapes)
    for (bool dt : {false, true}) {
      check_reduce<float>(s[0], s[1], s[2], dt, 1e-6);
      check_reduce<bf16>(s[0], s[1], s[2], dt, 1e-2);
    }
}

TEST(LowRank, ParallelBlocksMatchReference) {  // large enough for a parallel region
  check_expand<float>(512, 1536, 8, true, 1.0f, 1e-6);
  check_reduce<float>(512, 576, 16, true, 1e-5);
}

TEST(LowRank, RankAboveTheLimitIsAnError) {
  std::vector<float> buf(17 * 4);
  EXPECT_THROW(cpu::low_rank_expand(1, 4, 17, 1.0f, buf.data(), 17, buf.data(), 4, 1, 0.0f, buf.data(), 4), Error);
  EXPECT_THROW(cpu::low_rank_reduce(1, 4, 17, 1.0f, buf.data(), 17, buf.data(), 4, buf.data(), 4, 1), Error);
}
