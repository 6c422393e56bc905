// ops::rms_norm and ops::layer_norm: values against a double-precision formula, gradients by
// finite differences for x, weight and bias, bf16 rounding as transformers does it, errors.
#include "ops/norm.h"

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

const std::vector<Shape> kShapes = {{3, 7}, {2, 3, 33}, {5, 1}, {4, 17}, {1, 64}};

std::vector<double> rms_ref(const std::vector<double>& x, const std::vector<double>& w, int64_t hidden, double eps,
                            bool unit_offset) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / size_t(hidden); ++r) {
    double ss = 0;
    for (size_t h = 0; h < size_t(hidden); ++h) ss += x[r * size_t(hidden) + h] * x[r * size_t(hidden) + h];
    double rs = 1 / std::sqrt(ss / double(hidden) + eps);
    for (size_t h = 0; h < size_t(hidden); ++h)
      y[r * size_t(hidden) + h] = x[r * size_t(hidden) + h] * rs * (w.empty() ? 1.0 : (unit_offset ? 1 + w[h] : w[h]));
  }
  return y;
}

void expect_near_all(const std::vector<double>& a, const std::vector<double>& b, double tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], tol) << "at " << i;
}

// Hidden size 1 normalises to +-1 with a vanishing gradient unless eps is large.
double eps_for(const Shape& s) { return s.back() == 1 ? 0.5 : 1e-6; }

}  // namespace

TEST(RmsNorm, ForwardMatchesFormula) {
  for (bool unit_offset : {false, true}) {
    Tensor x = rand_leaf({4, 33}, 1, false), w = rand_leaf({33}, 2, false);
    expect_near_all(ops::rms_norm(x, w, 1e-6, unit_offset).to_doubles(),
                    rms_ref(x.to_doubles(), w.to_doubles(), 33, 1e-6, unit_offset), 1e-12);
    expect_near_all(ops::rms_norm(x, Tensor(), 1e-5).to_doubles(), rms_ref(x.to_doubles(), {}, 33, 1e-5, false), 1e-12);
  }
}

TEST(RmsNorm, GradcheckXAndWeight) {
  for (const Shape& s : kShapes)
    for (bool unit_offset : {false, true})
      expect_gradients_match(
          [&](const std::vector<Tensor>& in) { return ops::rms_norm(in[0], in[1], eps_for(s), unit_offset); },
          {rand_leaf(s, 10), rand_leaf({s.back()}, 11)});
}

TEST(RmsNorm, GradcheckWithoutAffineAndWithFrozenParts) {
  for (const Shape& s : kShapes) {
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::rms_norm(in[0], Tensor(), eps_for(s)); },
                           {rand_leaf(s, 12)});
    // Only the weight needs a gradient (x frozen), and only x (weight frozen).
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::rms_norm(in[0], in[1], eps_for(s), true); },
                           {rand_leaf(s, 13, false), rand_leaf({s.back()}, 14)});
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::rms_norm(in[0], in[1], eps_for(s)); },
                           {rand_leaf(s, 15), rand_leaf({s.back()}, 16, false)});
  }
}

TEST(RmsNorm, GradcheckNonContiguousX) {
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) { return ops::rms_norm(ops::transpose(in[0], 0, 1), in[1], 1e-6); },
      {rand_leaf({9, 5}, 17), rand_leaf({9}, 18)});
}

TEST(RmsNorm, Bf16RoundsLikeTransformers) {
  Generator gen(5);
  Tensor x = randn({3, 40}, gen, DType::bf16), w = randn({40}, gen, DType::bf16);
  std::vector<float> xv = x.to_floats(), wv = w.to_floats();
  for (bool unit_offset : {false, true}) {
    std::vector<double> y = ops::rms_norm(x, w, 1e-6, unit_offset).to_doubles();
    for (size_t r = 0; r < 3; ++r) {
      float ss = 0;
      for (size_t h = 0; h < 40; ++h) ss += xv[r * 40 + h] * xv[r * 40 + h];
      float rs = 1.0f / std::sqrt(ss / 40.0f + 1e-6f);
      for (size_t h = 0; h < 40; ++h) {
        float n = xv[r * 40 + h] * rs;
        // Llama: weight * hidden.to(bf16); Gemma: (hidden * (1 + weight)).to(bf16).
        float expect = unit_offset ? bf16_to_float(float_to_bf16(n * (1.0f + wv[h])))
                                   : bf16_to_float(float_to_bf16(bf16_to_float(float_to_bf16(n)) * wv[h]));
        // The row sum may differ in its last bit from this sequential one: allow one bf16 step.
        EXPECT_NEAR(y[r * 40 + h], expect, std::abs(expect) * 1e-2 + 1e-30) << r << "," << h;
      }
    }
  }
}

// add_rms_norm: {x + r, rms_norm(x + r)} in one node. Both outputs feed the checked function, so the
// gradient the residual stream brings back (through the sum) is checked with the norm's.
TEST(AddRmsNorm, GradcheckBothOutputs) {
  for (const Shape& s : kShapes)
    for (bool unit_offset : {false, true})
      expect_gradients_match(
          [&](const std::vector<Tensor>& in) {
            auto [sum, y] = ops::add_rms_norm(in[0], in[1], in[2], eps_for(s), unit_offset);
            return ops::add(ops::scale(sum, 0.7), y);
          },
          {rand_leaf(s, 20), rand_leaf(s, 21), rand_leaf({s.back()}, 22)});
  // Only the norm's output used; the residual input frozen.
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) { return ops::add_rms_norm(in[0], in[1], in[2], 1e-6).second; },
      {rand_leaf({4, 17}, 23), rand_leaf({4, 17}, 24, false), rand_leaf({17}, 25)});
}

TEST(AddRmsNorm, EqualsAddThenRmsNorm) {
  Generator gen(6);
  for (DType dt : {DType::f32, DType::bf16}) {
    Tensor x = randn({5, 96}, gen, dt), r = randn({5, 96}, gen, dt), w = randn({96}, gen, dt);
    auto [sum, y] = ops::add_rms_norm(x, r, w, 1e-6);
    Tensor sum_ref = ops::add(x, r);
    EXPECT_EQ(sum.to_doubles(), sum_ref.to_doubles()) << dtype_name(dt);
    EXPECT_EQ(y.to_doubles(), ops::rms_norm(sum_ref, w, 1e-6).to_doubles()) << dtype_name(dt);
  }
  EXPECT_THROW(ops::add_rms_norm(rand_leaf({2, 8}, 1, false), rand_leaf({2, 7}, 2, false), Tensor(), 1e-6), Error);
}

TEST(RmsNorm, Errors) {
  Tensor x = rand_leaf({2, 8}, 1, false);
  EXPECT_THROW(ops::rms_norm(x, rand_leaf({7}, 2, false), 1e-6), Error);
  EXPECT_THROW(ops::rms_norm(x, rand_leaf({2, 8}, 2, false), 1e-6), Error);
  EXPECT_THROW(ops::rms_norm(x, Tensor::ones({8}, DType::f32), 1e-6), Error);
  EXPECT_THROW(ops::rms_norm(Tensor::zeros({2, 8}, DType::i64), Tensor(), 1e-6), Error);
  EXPECT_THROW(ops::rms_norm(Tensor::scalar(1.0, DType::f64), Tensor(), 1e-6), Error);
  EXPECT_THROW(ops::rms_norm(Tensor(), Tensor(), 1e-6), Error);
}

TEST(LayerNorm, ForwardMatchesFormula) {
  Tensor x = rand_leaf({3, 21}, 1, false), w = rand_leaf({21}, 2, false), b = rand_leaf({21}, 3, false);
  std::vector<double> xv = x.to_doubles(), wv = w.to_doubles(), bv = b.to_doubles();
  std::vector<double> y = ops::layer_norm(x, w, b, 1e-5).to_doubles();
  for (size_t r = 0; r < 3; ++r) {
    double m = 0, v = 0;
    for (size_t h = 0; h < 21; ++h) m += xv[r * 21 + h] / 21;
    for (size_t h = 0; h < 21; ++h) v += (xv[r * 21 + h] - m) * (xv[r * 21 + h] - m) / 21;
    for (size_t h = 0; h < 21; ++h)
      EXPECT_NEAR(y[r * 21 + h], (xv[r * 21 + h] - m) / std::sqrt(v + 1e-5) * wv[h] + bv[h], 1e-12);
  }
}

TEST(LayerNorm, GradcheckXWeightBias) {
  for (const Shape& s : kShapes) {
    if (s.back() == 1) continue;  // var = 0: the output is the bias alone, rstd = 1/sqrt(eps) amplifies noise
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::layer_norm(in[0], in[1], in[2], 1e-5); },
                           {rand_leaf(s, 20), rand_leaf({s.back()}, 21), rand_leaf({s.back()}, 22)});
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::layer_norm(in[0], in[1], Tensor(), 1e-5); },
                           {rand_leaf(s, 23), rand_leaf({s.back()}, 24)});
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::layer_norm(in[0], Tensor(), in[1], 1e-5); },
                           {rand_leaf(s, 25), rand_leaf({s.back()}, 26)});
    expect_gradients_match(
        [&](const std::vector<Tensor>& in) { return ops::layer_norm(in[0], Tensor(), Tensor(), 1e-5); },
        {rand_leaf(s, 27)});
    // Frozen x: weight and bias gradients alone.
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::layer_norm(in[0], in[1], in[2], 1e-5); },
                           {rand_leaf(s, 28, false), rand_leaf({s.back()}, 29), rand_leaf({s.back()}, 30)});
  }
}

TEST(LayerNorm, HiddenOneGivesBiasAndItsGradient) {
  Tensor x = rand_leaf({4, 1}, 1), w = rand_leaf({1}, 2), b = rand_leaf({1}, 3);
  Tensor y = ops::layer_norm(x, w, b, 1e-5);
  for (double v : y.to_doubles()) EXPECT_DOUBLE_EQ(v, b.to_doubles()[0]);
  autograd::backward({y}, {Tensor::ones({4, 1}, DType::f64)});
  EXPECT_DOUBLE_EQ(b.grad().to_doubles()[0], 4.0);
  EXPECT_DOUBLE_EQ(w.grad().to_doubles()[0], 0.0);
  for (double v : x.grad().to_doubles()) EXPECT_DOUBLE_EQ(v, 0.0);
}

TEST(LayerNorm, Bf16MatchesFloatComputationRoundedOnce) {
  Generator gen(6);
  Tensor x = randn({2, 50}, gen, DType::bf16), w = randn({50}, gen, DType::bf16), b = randn({50}, gen, DType::bf16);
  std::vector<double> y = ops::layer_norm(x, w, b, 1e-5).to_doubles();
  std::vector<double> ref = ops::layer_norm(Tensor::from_values(x.to_doubles(), {2, 50}, DType::f64),
                                            Tensor::from_values(w.to_doubles(), {50}, DType::f64),
                                            Tensor::from_values(b.to_doubles(), {50}, DType::f64), 1e-5)
                                .to_doubles();
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], std::abs(ref[i]) * 8e-3 + 1e-6) << i;
}

TEST(LayerNorm, Errors) {
  Tensor x = rand_leaf({2, 8}, 1, false);
  EXPECT_THROW(ops::layer_norm(x, rand_leaf({8}, 2, false), rand_leaf({9}, 3, false), 1e-5), Error);
  EXPECT_THROW(ops::layer_norm(x, Tensor::ones({8}), Tensor(), 1e-5), Error);
  EXPECT_THROW(ops::layer_norm(x, Tensor(), Tensor::ones({8}), 1e-5), Error);
  EXPECT_THROW(ops::layer_norm(Tensor::zeros({8}, DType::i32), Tensor(), Tensor(), 1e-5), Error);
}
