// ops::matmul / ops::linear and kernels/cpu/gemm: gradient checks in f64, layouts, errors.
#include "ops/matmul.h"

#include <gtest/gtest.h>

#include <cmath>

#include "autograd/engine.h"
#include "gradcheck.h"
#include "kernels/cpu/gemm.h"
#include "ops/cast.h"
#include "ops/view.h"

using namespace automodel;
using automodel::testing::expect_gradients_match;
using automodel::testing::rand_leaf;

namespace {

// Reference: [..., M, K] @ [..., K, N] on doubles with explicit broadcasting, from logical values.
std::vector<double> ref_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb, Shape* out_shape) {
  Tensor la = ta ? ops::transpose(a.detach(), -1, -2) : a.detach();
  Tensor lb = tb ? ops::transpose(b.detach(), -1, -2) : b.detach();
  la = ops::contiguous(la);
  lb = ops::contiguous(lb);
  const int64_t M = la.size(-2), K = la.size(-1), N = lb.size(-1);
  Shape ab(la.shape().begin(), la.shape().end() - 2), bb(lb.shape().begin(), lb.shape().end() - 2);
  const size_t nd = std::max(ab.size(), bb.size());
  while (ab.size() < nd) ab.insert(ab.begin(), 1);
  while (bb.size() < nd) bb.insert(bb.begin(), 1);
  Shape ob(nd);
  for (size_t i = 0; i < nd; ++i) ob[i] = std::max(ab[i], bb[i]);
  std::vector<double> av = la.to_doubles(), bv = lb.to_doubles();
  const int64_t count = shape_numel(ob);
  std::vector<double> out(static_cast<size_t>(count * M * N), 0.0);
  for (int64_t i = 0; i < count; ++i) {
    int64_t rem = i, ai = 0, bi = 0, as = 1, bs = 1;
    for (size_t d = nd; d-- > 0;) {
      int64_t idx = rem % ob[d];
      rem /= ob[d];
      ai += (ab[d] == 1 ? 0 : idx) * as;
      bi += (bb[d] == 1 ? 0 : idx) * bs;
      as *= ab[d];
      bs *= bb[d];
    }
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += av[size_t((ai * M + m) * K + k)] * bv[size_t((bi * K + k) * N + n)];
        out[size_t((i * M + m) * N + n)] = s;
      }
  }
  *out_shape = ob;
  out_shape->push_back(M);
  out_shape->push_back(N);
  return out;
}

void expect_matmul_matches_reference(const Tensor& a, const Tensor& b, bool ta, bool tb, double tol) {
  Shape shape;
  std::vector<double> ref = ref_matmul(a, b, ta, tb, &shape);
  Tensor c = ops::matmul(a, b, ta, tb);
  ASSERT_EQ(c.shape(), shape);
  ASSERT_EQ(c.dtype(), a.dtype());
  std::vector<double> got = c.to_doubles();
  double max_ref = 1e-30, max_err = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(ref[i]));
    max_err = std::max(max_err, std::abs(ref[i] - got[i]));
  }
  EXPECT_LE(max_err / max_ref, tol) << a.describe() << " @ " << b.describe() << " ta=" << ta << " tb=" << tb;
}

Shape mat_shape(Shape batch, int64_t r, int64_t c, bool t) {
  batch.push_back(t ? c : r);
  batch.push_back(t ? r : c);
  return batch;
}

}  // namespace

TEST(Matmul, GradcheckAllTransposeCombos) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int64_t M = 5, K = 7, N = 3;
      Tensor a = rand_leaf(mat_shape({}, M, K, ta), 1);
      Tensor b = rand_leaf(mat_shape({}, K, N, tb), 2);
      SCOPED_TRACE(::testing::Message() << "ta=" << ta << " tb=" << tb);
      expect_matmul_matches_reference(a, b, ta, tb, 1e-12);
      expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::matmul(in[0], in[1], ta, tb); }, {a, b});
    }
}

TEST(Matmul, GradcheckBatched) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Tensor a = rand_leaf(mat_shape({2, 3}, 4, 17, ta), 3);
      Tensor b = rand_leaf(mat_shape({2, 3}, 17, 5, tb), 4);
      SCOPED_TRACE(::testing::Message() << "ta=" << ta << " tb=" << tb);
      expect_matmul_matches_reference(a, b, ta, tb, 1e-12);
      expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::matmul(in[0], in[1], ta, tb); }, {a, b});
    }
}

TEST(Matmul, GradcheckSharedTwoDimB) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Tensor a = rand_leaf(mat_shape({3, 2}, 5, 6, ta), 5);
      Tensor b = rand_leaf(mat_shape({}, 6, 19, tb), 6);
      SCOPED_TRACE(::testing::Message() << "ta=" << ta << " tb=" << tb);
      expect_matmul_matches_reference(a, b, ta, tb, 1e-12);
      expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::matmul(in[0], in[1], ta, tb); }, {a, b});
    }
}

TEST(Matmul, GradcheckSharedTwoDimA) {
  Tensor a = rand_leaf({5, 6}, 7);
  Tensor b = rand_leaf({4, 6, 3}, 8);
  expect_matmul_matches_reference(a, b, false, false, 1e-12);
  expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::matmul(in[0], in[1]); }, {a, b});
}

TEST(Matmul, GradcheckGeneralBroadcast) {
  // [2, 1, 3] x [1, 4, 3] batch dims -> [2, 4, 3]; both operands' gradients sum over broadcast dims.
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Tensor a = rand_leaf(mat_shape({2, 1, 3}, 3, 4, ta), 9);
      Tensor b = rand_leaf(mat_shape({4, 1}, 4, 2, tb), 10);
      SCOPED_TRACE(::testing::Message() << "ta=" << ta << " tb=" << tb);
      expect_matmul_matches_reference(a, b, ta, tb, 1e-12);
      expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::matmul(in[0], in[1], ta, tb); }, {a, b});
    }
}

TEST(Matmul, TransposedViewsUseTheFlagNotACopy) {
  // a^T as a view (strides swapped) must give the same values and gradients as the flag.
  Tensor a = rand_leaf({7, 5}, 11);  // stored [K, M]
  Tensor b = rand_leaf({7, 3}, 12);
  expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::matmul(ops::transpose(in[0], 0, 1), in[1]); },
                         {a, b});
  Tensor v = ops::matmul(ops::transpose(a, 0, 1), b);
  Tensor f = ops::matmul(a, b, true, false);
  EXPECT_EQ(v.to_doubles(), f.to_doubles());
  // A batched transposed view of b, and a sliced (non-contiguous rows) a.
  Tensor a3 = rand_leaf({2, 4, 9}, 13);
  Tensor b3 = rand_leaf({2, 3, 6}, 14);
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) {
        return ops::matmul(ops::slice(in[0], 2, 1, 7), ops::transpose(in[1], 1, 2));
      },
      {a3, b3});
  // A permuted operand whose batch dim is not outermost in memory.
  Tensor p = rand_leaf({4, 2, 6}, 15);
  Tensor q = rand_leaf({2, 6, 5}, 16);
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) {
        return ops::matmul(ops::permute(in[0], {1, 0, 2}), in[1]);
      },
      {p, q});
}

TEST(Matmul, GradientOnlyForInputsThatNeedIt) {
  Tensor a = rand_leaf({3, 4}, 17);
  Tensor b = rand_leaf({4, 2}, 18, false);
  Tensor c = ops::matmul(a, b);
  autograd::backward({c}, {Tensor::ones({3, 2}, DType::f64)});
  EXPECT_TRUE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
}

TEST(Matmul, EmptyDims) {
  Tensor a = rand_leaf({2, 3, 0}, 19);
  Tensor b = rand_leaf({0, 4}, 20);
  Tensor c = ops::matmul(a, b);
  EXPECT_EQ(c.shape(), (Shape{2, 3, 4}));
  for (double v : c.to_doubles()) EXPECT_EQ(v, 0.0);
  Tensor z = ops::matmul(rand_leaf({0, 3, 5}, 21, false), rand_leaf({5, 2}, 22, false));
  EXPECT_EQ(z.shape(), (Shape{0, 3, 2}));
}

TEST(Matmul, Errors) {
  Tensor a = Tensor::zeros({3, 4});
  EXPECT_THROW(ops::matmul(a, Tensor::zeros({5, 2})), Error);                            // K mismatch
  EXPECT_THROW(ops::matmul(a, Tensor::zeros({4, 2}), true, false), Error);               // K mismatch via flag
  EXPECT_THROW(ops::matmul(Tensor::zeros({4}), Tensor::zeros({4, 2})), Error);           // rank < 2
  EXPECT_THROW(ops::matmul(a, Tensor::zeros({4})), Error);                               // rank < 2
  EXPECT_THROW(ops::matmul(a, Tensor::zeros({4, 2}, DType::f64)), Error);                // dtype mismatch
  EXPECT_THROW(ops::matmul(Tensor::zeros({2, 3, 4}), Tensor::zeros({3, 4, 2})), Error);  // batch mismatch
  EXPECT_THROW(ops::matmul(Tensor::zeros({3, 4}, DType::i32), Tensor::zeros({4, 2}, DType::i32)), Error);
  EXPECT_THROW(ops::matmul(Tensor(), a), Error);
  try {
    ops::matmul(a, Tensor::zeros({5, 2}));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("matmul"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[3, 4]"), std::string::npos) << e.what();
  }
}

TEST(Matmul, Float32AndBf16MatchDoubleReference) {
  for (DType dt : {DType::f32, DType::bf16})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        Tensor a = ops::to_dtype(rand_leaf(mat_shape({2, 3}, 33, 70, ta), 23, false), dt);
        Tensor b = ops::to_dtype(rand_leaf(mat_shape({3}, 70, 17, tb), 24, false), dt);
        // The reference uses the same (rounded) inputs, so only accumulation and the output rounding differ.
        expect_matmul_matches_reference(a, b, ta, tb, dt == DType::f32 ? 1e-5 : 1e-2);
        Tensor b2 = ops::to_dtype(rand_leaf(mat_shape({}, 70, 17, tb), 25, false), dt);
        expect_matmul_matches_reference(a, b2, ta, tb, dt == DType::f32 ? 1e-5 : 1e-2);
      }
}

TEST(Matmul, Bf16BackwardMatchesF32) {
  Tensor a = ops::to_dtype(rand_leaf({2, 3, 9, 20}, 26, false), DType::bf16);
  Tensor b = ops::to_dtype(rand_leaf({20, 11}, 27, false), DType::bf16);
  Tensor ab = rand_leaf({2, 1, 20, 11}, 28, false);  // b broadcast over the second batch dim
  for (const Tensor& bb : {b, ops::to_dtype(ab, DType::bf16)}) {
    Tensor a16 = a.detach().set_requires_grad(true);
    Tensor b16 = bb.detach().set_requires_grad(true);
    Tensor a32 = ops::to_dtype(a, DType::f32).set_requires_grad(true);
    Tensor b32 = ops::to_dtype(bb, DType::f32).set_requires_grad(true);
    Tensor c16 = ops::matmul(a16, b16), c32 = ops::matmul(a32, b32);
    Generator gen(5);
    Tensor g32 = ops::to_dtype(ops::to_dtype(randn(c32.shape(), gen), DType::bf16), DType::f32);
    autograd::backward({c16}, {ops::to_dtype(g32, DType::bf16)});
    autograd::backward({c32}, {g32});
    for (auto [x16, x32] : {std::pair{a16, a32}, std::pair{b16, b32}}) {
      std::vector<double> g = x16.grad().to_doubles(), r = x32.grad().to_doubles();
      double max_ref = 1e-30, max_err = 0;
      for (size_t i = 0; i < r.size(); ++i) {
        max_ref = std::max(max_ref, std::abs(r[i]));
        max_err = std::max(max_err, std::abs(r[i] - g[i]));
      }
      EXPECT_LE(max_err / max_ref, 1e-2);
    }
  }
}

TEST(Linear, GradcheckWithAndWithoutBias) {
  for (bool with_bias : {false, true}) {
    Tensor x = rand_leaf({2, 3, 17}, 30);
    Tensor w = rand_leaf({5, 17}, 31);
    Tensor b = with_bias ? rand_leaf({5}, 32) : Tensor();
    SCOPED_TRACE(with_bias ? "bias" : "no bias");
    std::vector<Tensor> in = {x, w};
    if (with_bias) in.push_back(b);
    expect_gradients_match(
        [&](const std::vector<Tensor>& v) { return ops::linear(v[0], v[1], v.size() > 2 ? v[2] : Tensor()); }, in);
    // Same values as matmul with transpose_b plus the bias.
    Tensor y = ops::linear(x, w, b);
    std::vector<double> ref = ops::matmul(x, w, false, true).to_doubles(), got = y.to_doubles();
    std::vector<double> bv = with_bias ? b.to_doubles() : std::vector<double>(5, 0.0);
    for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(got[i], ref[i] + bv[i % 5], 1e-12);
  }
}

TEST(Linear, OneDimInputTransposedWeightAndStridedX) {
  Tensor x = rand_leaf({9}, 33);
  Tensor w = rand_leaf({4, 9}, 34);
  Tensor b = rand_leaf({4}, 35);
  expect_gradients_match([&](const std::vector<Tensor>& v) { return ops::linear(v[0], v[1], v[2]); }, {x, w, b});
  // weight given as the transposed view of a [in, out] tensor (tied / transposed weights).
  Tensor wt = rand_leaf({9, 4}, 36);
  Tensor x2 = rand_leaf({3, 9}, 37);
  expect_gradients_match([&](const std::vector<Tensor>& v) { return ops::linear(v[0], ops::transpose(v[1], 0, 1)); },
                         {x2, wt});
  // x a non-contiguous view.
  Tensor x3 = rand_leaf({3, 13}, 38);
  expect_gradients_match([&](const std::vector<Tensor>& v) { return ops::linear(ops::slice(v[0], 1, 2, 11), v[1]); },
                         {x3, w});
}

TEST(Linear, Bf16AndF32MatchReference) {
  for (DType dt : {DType::f32, DType::bf16}) {
    Tensor x = ops::to_dtype(rand_leaf({2, 33, 70}, 40, false), dt);
    Tensor w = ops::to_dtype(rand_leaf({130, 70}, 41, false), dt);
    Tensor b = ops::to_dtype(rand_leaf({130}, 42, false), dt);
    Tensor y = ops::linear(x, w, b);
    EXPECT_EQ(y.dtype(), dt);
    std::vector<double> xv = x.to_doubles(), wv = w.to_doubles(), bv = b.to_doubles(), yv = y.to_doubles();
    double max_ref = 0, max_err = 0;
    for (int64_t r = 0; r < 66; ++r)
      for (int64_t o = 0; o < 130; ++o) {
        double s = bv[size_t(o)];
        for (int64_t i = 0; i < 70; ++i) s += xv[size_t(r * 70 + i)] * wv[size_t(o * 70 + i)];
        max_ref = std::max(max_ref, std::abs(s));
        max_err = std::max(max_err, std::abs(s - yv[size_t(r * 130 + o)]));
      }
    EXPECT_LE(max_err / max_ref, dt == DType::f32 ? 1e-5 : 1e-2) << dtype_name(dt);
  }
}

TEST(Linear, Errors) {
  Tensor x = Tensor::zeros({2, 4});
  EXPECT_THROW(ops::linear(x, Tensor::zeros({3, 5})), Error);                      // in mismatch
  EXPECT_THROW(ops::linear(x, Tensor::zeros({4})), Error);                         // weight rank
  EXPECT_THROW(ops::linear(x, Tensor::zeros({3, 4}), Tensor::zeros({4})), Error);  // bias size
  EXPECT_THROW(ops::linear(x, Tensor::zeros({3, 4}, DType::f64)), Error);          // dtype mismatch
  EXPECT_THROW(ops::linear(x, Tensor::zeros({3, 4}), Tensor::zeros({3}, DType::bf16)), Error);
}

TEST(Gemm, KernelLeadingDimsBetaAndBf16Outputs) {
  // C (ldc 7) = 2 * A^T (lda 6) @ B (ldb 5) + 0.5 * C, float, against a naive loop.
  const int64_t M = 4, N = 3, K = 5;
  std::vector<float> A(size_t(K * 6)), B(size_t(K * 5)), C(size_t(M * 7)), ref(size_t(M * 7));
  for (size_t i = 0; i < A.size(); ++i) A[i] = float(std::sin(double(i)));
  for (size_t i = 0; i < B.size(); ++i) B[i] = float(std::cos(double(i)));
  for (size_t i = 0; i < C.size(); ++i) C[i] = ref[i] = float(i % 5);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += double(A[size_t(k * 6 + m)]) * B[size_t(k * 5 + n)];
      ref[size_t(m * 7 + n)] = float(2 * s + 0.5 * ref[size_t(m * 7 + n)]);
    }
  cpu::gemm(true, false, M, N, K, 2.0f, A.data(), 6, B.data(), 5, 0.5f, C.data(), 7);
  for (size_t i = 0; i < C.size(); ++i) EXPECT_NEAR(C[i], ref[i], 1e-5) << i;
  // bf16 inputs: f32 output with beta = 1 accumulation, and bf16 output.
  std::vector<bf16> A16(A.size()), B16(B.size());
  for (size_t i = 0; i < A.size(); ++i) A16[i] = float_to_bf16(A[i]);
  for (size_t i = 0; i < B.size(); ++i) B16[i] = float_to_bf16(B[i]);
  std::vector<float> C32(size_t(M * 7), 1.0f);
  cpu::gemm(true, false, M, N, K, 1.0f, A16.data(), 6, B16.data(), 5, 1.0f, C32.data(), 7);
  cpu::gemm(true, false, M, N, K, 1.0f, A16.data(), 6, B16.data(), 5, 1.0f, C32.data(), 7);
  std::vector<bf16> C16(size_t(M * 7), float_to_bf16(9.0f));
  cpu::gemm(true, false, M, N, K, 1.0f, A16.data(), 6, B16.data(), 5, 0.0f, C16.data(), 7);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < 7; ++n) {
      if (n < N) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k)
          s += double(bf16_to_float(A16[size_t(k * 6 + m)])) * bf16_to_float(B16[size_t(k * 5 + n)]);
        EXPECT_NEAR(C32[size_t(m * 7 + n)], 1.0 + 2 * s, 1e-5);
        EXPECT_NEAR(bf16_to_float(C16[size_t(m * 7 + n)]), s, 1e-2 * (1 + std::abs(s)));
      } else {  // columns past N untouched
        EXPECT_EQ(C32[size_t(m * 7 + n)], 1.0f);
        EXPECT_EQ(bf16_to_float(C16[size_t(m * 7 + n)]), 9.0f);
      }
    }
  // The primitives are cached: repeating a shape adds none.
  int64_t cached = cpu::gemm_primitive_cache_size();
  cpu::gemm(true, false, M, N, K, 1.0f, A16.data(), 6, B16.data(), 5, 0.0f, C16.data(), 7);
  EXPECT_EQ(cpu::gemm_primitive_cache_size(), cached);
}
