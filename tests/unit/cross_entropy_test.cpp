// ops::cross_entropy: values against a double-precision formula, ignored labels for every
// reduction, finite-difference gradients, large vocabularies, errors.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/engine.h"
#include "core/rng.h"
#include "gradcheck.h"
#include "ops/loss.h"
#include "ops/view.h"

using namespace automodel;
using automodel::testing::expect_gradients_match;
using automodel::testing::rand_leaf;

namespace {

std::vector<double> row_losses(const std::vector<double>& x, const std::vector<int64_t>& labels, int64_t vocab,
                               int64_t ignore_index) {
  std::vector<double> out;
  for (size_t r = 0; r < labels.size(); ++r) {
    if (labels[r] == ignore_index) {
      out.push_back(0);
      continue;
    }
    double m = -INFINITY, s = 0;
    for (int64_t v = 0; v < vocab; ++v) m = std::max(m, x[r * size_t(vocab) + size_t(v)]);
    for (int64_t v = 0; v < vocab; ++v) s += std::exp(x[r * size_t(vocab) + size_t(v)] - m);
    out.push_back(m + std::log(s) - x[r * size_t(vocab) + size_t(labels[r])]);
  }
  return out;
}

Tensor labels_tensor(const std::vector<int64_t>& v) { return Tensor::from_vector<int64_t>(v, {int64_t(v.size())}); }

}  // namespace

TEST(CrossEntropy, ForwardEachReduction) {
  Tensor x = rand_leaf({6, 11}, 1, false);
  std::vector<int64_t> labels = {3, -100, 0, 10, -100, 7};
  std::vector<double> ref = row_losses(x.to_doubles(), labels, 11, -100);
  Tensor none = ops::cross_entropy(x, labels_tensor(labels), ops::Reduction::none);
  ASSERT_EQ(none.shape(), (Shape{6}));
  std::vector<double> nv = none.to_doubles();
  double sum = 0;
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_NEAR(nv[i], ref[i], 1e-12);
    sum += ref[i];
  }
  Tensor s = ops::cross_entropy(x, labels_tensor(labels), ops::Reduction::sum);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_NEAR(s.item(), sum, 1e-12);
  EXPECT_NEAR(ops::cross_entropy(x, labels_tensor(labels)).item(), sum / 4, 1e-12);
}

TEST(CrossEntropy, GradcheckEachReductionWithIgnoredLabels) {
  for (ops::Reduction red : {ops::Reduction::none, ops::Reduction::sum, ops::Reduction::mean})
    for (int64_t vocab : {1, 5, 17, 33}) {
      std::vector<int64_t> labels = {0, -100, vocab - 1, vocab / 2, -100, 0, vocab > 2 ? 2 : 0};
      Tensor lab = labels_tensor(labels);
      expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::cross_entropy(in[0], lab, red); },
                             {rand_leaf({7, vocab}, 50 + uint64_t(vocab))});
    }
}

TEST(CrossEntropy, CustomIgnoreIndexInsideTheVocab) {
  Tensor lab = labels_tensor({0, 1, 2, 1, 3});
  for (ops::Reduction red : {ops::Reduction::none, ops::Reduction::mean})
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::cross_entropy(in[0], lab, red, 1); },
                           {rand_leaf({5, 4}, 60)});
  Tensor x = rand_leaf({5, 4}, 61);
  Tensor loss = ops::cross_entropy(x, lab, ops::Reduction::none, 1);
  EXPECT_EQ(loss.to_doubles()[1], 0.0);
  autograd::backward({loss}, {Tensor::ones({5}, DType::f64)});
  std::vector<double> g = x.grad().to_doubles();
  for (size_t v = 0; v < 4; ++v) {
    EXPECT_EQ(g[4 + v], 0.0);
    EXPECT_EQ(g[12 + v], 0.0);
  }
}

TEST(CrossEntropy, MeanOfAllIgnoredIsNanWithZeroGradient) {
  Tensor x = rand_leaf({3, 4}, 2);
  Tensor loss = ops::cross_entropy(x, labels_tensor({-100, -100, -100}));
  EXPECT_TRUE(std::isnan(loss.item()));
  autograd::backward(loss);
  for (double g : x.grad().to_doubles()) EXPECT_EQ(g, 0.0);
  EXPECT_EQ(ops::cross_entropy(x.detach(), labels_tensor({-100, -100, -100}), ops::Reduction::sum).item(), 0.0);
}

TEST(CrossEntropy, LargeVocabF32AndBf16MatchDouble) {
  Generator gen(9);
  const int64_t V = 49152;
  Tensor x64 = randn({5, V}, gen, DType::f64);
  std::vector<double> xv = x64.to_doubles();
  for (double& v : xv) v *= 4;
  std::vector<int64_t> labels = {0, V - 1, 12345, -100, 77};
  std::vector<double> ref = row_losses(xv, labels, V, -100);
  Tensor x32 = Tensor::from_values(xv, {5, V}, DType::f32);
  std::vector<double> ref32 = row_losses(x32.to_doubles(), labels, V, -100);
  std::vector<double> l32 = ops::cross_entropy(x32, labels_tensor(labels), ops::Reduction::none).to_doubles();
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(l32[i], ref32[i], 1e-5 * std::abs(ref32[i]) + 1e-6) << i;
  // Gradient rows sum to zero (softmax minus one-hot) and match the double softmax.
  x32.set_requires_grad(true);
  Tensor loss = ops::cross_entropy(x32, labels_tensor(labels), ops::Reduction::sum);
  autograd::backward(loss);
  std::vector<double> g = x32.grad().to_doubles();
  std::vector<double> xr = x32.to_doubles();
  for (size_t r = 0; r < 5; ++r) {
    if (labels[r] == -100) continue;
    double lse = ref32[r] + xr[r * V + size_t(labels[r])];
    double max_err = 0;
    for (int64_t v = 0; v < V; ++v) {
      double p = std::exp(xr[r * V + size_t(v)] - lse) - (v == labels[r] ? 1 : 0);
      max_err = std::max(max_err, std::abs(g[r * V + size_t(v)] - p));
    }
    EXPECT_LE(max_err, 1e-6) << r;
  }
  Tensor xb = Tensor::from_values(xv, {5, V}, DType::bf16);
  std::vector<double> refb = row_losses(xb.to_doubles(), labels, V, -100);
  std::vector<double> lb = ops::cross_entropy(xb, labels_tensor(labels), ops::Reduction::none).to_doubles();
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(lb[i], refb[i], 1e-2 * std::abs(refb[i]) + 1e-6) << i;
}

TEST(CrossEntropy, ExtremeLogitsStayFinite) {
  Tensor x = Tensor::from_values({1000, -1000, 0, -1e4, 1e4, 1e4}, {2, 3}, DType::f32);
  std::vector<double> l = ops::cross_entropy(x, labels_tensor({1, 2}), ops::Reduction::none).to_doubles();
  EXPECT_NEAR(l[0], 2000, 1e-3);
  EXPECT_NEAR(l[1], std::log(2.0), 1e-6);
}

TEST(CrossEntropy, ErrorsNameTheBadLabel) {
  Tensor x = rand_leaf({3, 5}, 1, false);
  try {
    ops::cross_entropy(x, labels_tensor({0, 5, 1}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("label 5"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("vocab size 5"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ops::cross_entropy(x, labels_tensor({0, -1, 1})), Error);
  EXPECT_THROW(ops::cross_entropy(x, labels_tensor({0, 1})), Error);
  EXPECT_THROW(ops::cross_entropy(x, Tensor::from_vector<int32_t>({0, 1, 2}, {3})), Error);
  EXPECT_THROW(ops::cross_entropy(rand_leaf({15}, 1, false), labels_tensor({0})), Error);
  EXPECT_THROW(ops::cross_entropy(Tensor::zeros({3, 5}, DType::i64), labels_tensor({0, 1, 2})), Error);
}
