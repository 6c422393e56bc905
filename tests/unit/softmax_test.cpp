// softmax / log_softmax along any dim: values against a double reference, stability for large
// and -inf inputs, bf16 statistics, gradients by finite differences, errors.
#include "ops/softmax.h"

#include <gtest/gtest.h>

#include <cmath>

#include "autograd/engine.h"
#include "core/rng.h"
#include "gradcheck.h"
#include "ops/binary.h"
#include "ops/view.h"

using namespace automodel;
using automodel::testing::expect_gradients_match;
using automodel::testing::rand_leaf;

namespace {

std::vector<double> ref_softmax(const std::vector<double>& x, const Shape& shape, int64_t dim, bool log) {
  int64_t d = dim < 0 ? dim + int64_t(shape.size()) : dim;
  int64_t outer = 1, n = shape[size_t(d)], inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= shape[size_t(i)];
  for (size_t i = size_t(d) + 1; i < shape.size(); ++i) inner *= shape[i];
  std::vector<double> y(x.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t j = 0; j < inner; ++j) {
      auto at = [&](int64_t k) { return size_t((o * n + k) * inner + j); };
      double m = -INFINITY, s = 0;
      for (int64_t k = 0; k < n; ++k) m = std::max(m, x[at(k)]);
      for (int64_t k = 0; k < n; ++k) s += std::exp(x[at(k)] - m);
      for (int64_t k = 0; k < n; ++k) y[at(k)] = log ? x[at(k)] - m - std::log(s) : std::exp(x[at(k)] - m) / s;
    }
  return y;
}

struct Case {
  Shape shape;
  int64_t dim;
};
const std::vector<Case> kCases = {{{3, 4, 5}, -1}, {{3, 4, 5}, 0}, {{3, 4, 5}, 1}, {{7, 33}, 1},     {{7, 33}, 0},
                                  {{1}, 0},        {{2, 1}, -1},   {{5, 17}, -1},  {{2, 3, 1, 4}, 2}};

}  // namespace

TEST(Softmax, ValuesAndGradients) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(shape_str(c.shape) + " dim " + std::to_string(c.dim));
    for (bool log : {false, true}) {
      Tensor x = rand_leaf(c.shape, 7, false);
      Tensor y = log ? ops::log_softmax(x, c.dim) : ops::softmax(x, c.dim);
      std::vector<double> got = y.to_doubles(), want = ref_softmax(x.to_doubles(), c.shape, c.dim, log);
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-13);
      expect_gradients_match(
          [&](const std::vector<Tensor>& in) {
            return log ? ops::log_softmax(in[0], c.dim) : ops::softmax(in[0], c.dim);
          },
          {rand_leaf(c.shape, 8)});
    }
  }
  expect_gradients_match([](const std::vector<Tensor>& in) { return ops::softmax(ops::transpose(in[0], 0, 1), -1); },
                         {rand_leaf({6, 4}, 9)});
}

TEST(Softmax, F32AndBf16LongRows) {
  for (int64_t n : {1, 7, 33, 1000, 4097, 49152}) {
    Generator gen(static_cast<uint64_t>(n));
    Tensor x = randn({3, n}, gen);
    for (bool log : {false, true}) {
      std::vector<double> want = ref_softmax(x.to_doubles(), {3, n}, -1, log);
      std::vector<double> got = (log ? ops::log_softmax(x) : ops::softmax(x)).to_doubles();
      double max_ref = 0, max_err = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        max_ref = std::max(max_ref, std::abs(want[i]));
        max_err = std::max(max_err, std::abs(got[i] - want[i]));
      }
      EXPECT_LE(max_err, 1e-6 * max_ref) << "n " << n << " log " << log;
      Tensor xb = randn({2, n}, gen, DType::bf16);
      std::vector<double> wb = ref_softmax(xb.to_doubles(), {2, n}, -1, log);
      std::vector<double> gb = (log ? ops::log_softmax(xb) : ops::softmax(xb)).to_doubles();
      for (size_t i = 0; i < wb.size(); ++i) EXPECT_NEAR(gb[i], wb[i], 8e-3 * std::abs(wb[i]) + 1e-30);
    }
  }
}

TEST(Softmax, Bf16BackwardRecomputesInFp32) {
  // A peaked softmax: its gradient depends on 1 - y, which a bf16-rounded output would lose.
  for (auto [shape, dim] : std::vector<std::pair<Shape, int64_t>>{{{4, 300}, -1}, {{300, 3}, 0}}) {
    for (bool log : {false, true}) {
      Generator gen(21);
      Tensor x = ops::scale(randn(shape, gen, DType::bf16), 6.0).detach();
      x.set_requires_grad(true);
      Tensor g = randn(shape, gen, DType::bf16);
      Tensor y = log ? ops::log_softmax(x, dim) : ops::softmax(x, dim);
      autograd::backward({y}, {g});
      // Reference in double from the same (bf16) values.
      std::vector<double> xv = x.to_doubles(), gv = g.to_doubles();
      std::vector<double> p = ref_softmax(xv, shape, dim, false), want(xv.size());
      int64_t d = dim < 0 ? dim + 2 : dim, n = shape[size_t(d)], inner = d == 0 ? shape[1] : 1,
              outer = d == 0 ? 1 : shape[0];
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < inner; ++j) {
          auto at = [&](int64_t k) { return size_t((o * n + k) * inner + j); };
          double s = 0;
          for (int64_t k = 0; k < n; ++k) s += log ? gv[at(k)] : gv[at(k)] * p[at(k)];
          for (int64_t k = 0; k < n; ++k) want[at(k)] = log ? gv[at(k)] - p[at(k)] * s : p[at(k)] * (gv[at(k)] - s);
        }
      std::vector<double> got = x.grad().to_doubles();
      double max_ref = 0, max_err = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        max_ref = std::max(max_ref, std::abs(want[i]));
        max_err = std::max(max_err, std::abs(got[i] - want[i]));
      }
      EXPECT_LE(max_err, 8e-3 * max_ref) << shape_str(shape) << " log " << log;
    }
  }
}

TEST(Softmax, StableForLargeAndMaskedInputs) {
  Tensor x = Tensor::from_values({1000, 1001, 999, -INFINITY}, {1, 4});
  std::vector<double> y = ops::softmax(x).to_doubles();
  double e0 = std::exp(-1.0), e2 = std::exp(-2.0), s = e0 + 1 + e2;
  EXPECT_NEAR(y[0], e0 / s, 1e-7);
  EXPECT_NEAR(y[1], 1 / s, 1e-7);
  EXPECT_EQ(y[3], 0.0);
  std::vector<double> l = ops::log_softmax(x).to_doubles();
  EXPECT_NEAR(l[1], -std::log(s), 1e-6);
  EXPECT_TRUE(std::isinf(l[3]) && l[3] < 0);
  // The same along a non-last dim.
  Tensor xt = Tensor::from_values({1000, 1, 1001, 2, -INFINITY, 3}, {3, 2});
  std::vector<double> yt = ops::softmax(xt, 0).to_doubles();
  EXPECT_NEAR(yt[0], 1 / (1 + std::exp(1.0)), 1e-7);
  EXPECT_EQ(yt[4], 0.0);
}

TEST(Softmax, Errors) {
  EXPECT_THROW(ops::softmax(Tensor::zeros({2, 3}), 2), Error);
  EXPECT_THROW(ops::log_softmax(Tensor::zeros({2, 3}), -3), Error);
  EXPECT_THROW(ops::softmax(Tensor::zeros({2, 3}, DType::i32)), Error);
  EXPECT_THROW(ops::softmax(Tensor()), Error);
}
