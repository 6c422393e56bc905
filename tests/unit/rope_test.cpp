// ops::rope: both pair layouts against a direct formula, partial rotary, per-batch and shared
// position ids, attention scaling, finite-difference gradients, errors.
#include "ops/rope.h"

#include <gtest/gtest.h>

#include <cmath>

#include "autograd/engine.h"
#include "core/rng.h"
#include "gradcheck.h"
#include "ops/view.h"

using namespace automodel;
using automodel::testing::expect_gradients_match;
using automodel::testing::rand_leaf;

namespace {

Tensor inv_freq(int64_t rot_dims, double base = 10000.0) {
  std::vector<float> f;
  for (int64_t i = 0; i < rot_dims / 2; ++i) f.push_back(float(1.0 / std::pow(base, double(2 * i) / double(rot_dims))));
  return Tensor::from_vector<float>(f, {rot_dims / 2});
}

// Direct formula in double with the angle taken in float, as transformers does.
std::vector<double> rope_ref(const Tensor& x, const std::vector<int64_t>& pos, bool per_batch, const Tensor& freq,
                             bool interleaved, double scaling) {
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), n = freq.size(0);
  std::vector<double> xv = x.to_doubles(), y = xv;
  std::vector<float> fv = freq.to_floats();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < n; ++i) {
          float angle = float(pos[size_t(per_batch ? b * T + t : t)]) * fv[size_t(i)];
          double c = std::cos(double(angle)) * scaling, s = std::sin(double(angle)) * scaling;
          size_t base = size_t(((b * T + t) * H + h) * D);
          size_t i0 = base + size_t(interleaved ? 2 * i : i), i1 = base + size_t(interleaved ? 2 * i + 1 : i + n);
          y[i0] = xv[i0] * c - xv[i1] * s;
          y[i1] = xv[i1] * c + xv[i0] * s;
        }
  return y;
}

struct Case {
  Shape x;      // [B, T, H, D]
  int64_t rot;  // R
  bool per_batch;
};

const std::vector<Case> kCases = {
    {{2, 5, 3, 8}, 8, true},   {{1, 7, 2, 16}, 16, false}, {{2, 3, 3, 10}, 6, true},
    {{3, 1, 1, 12}, 4, false}, {{1, 13, 9, 8}, 8, true},   {{2, 4, 1, 6}, 2, true},
};

std::vector<int64_t> positions(const Case& c) {
  const int64_t n = c.per_batch ? c.x[0] * c.x[1] : c.x[1];
  std::vector<int64_t> p;
  for (int64_t i = 0; i < n; ++i) p.push_back((i * 37 + 5) % 101);  // arbitrary, out of order
  return p;
}

Tensor pos_tensor(const Case& c, const std::vector<int64_t>& p) {
  return Tensor::from_vector<int64_t>(p, c.per_batch ? Shape{c.x[0], c.x[1]} : Shape{c.x[1]});
}

}  // namespace

TEST(Rope, ForwardMatchesFormulaBothStyles) {
  for (const Case& c : kCases)
    for (bool interleaved : {false, true})
      for (double scaling : {1.0, 0.75}) {
        Tensor x = rand_leaf(c.x, 1, false);
        std::vector<int64_t> p = positions(c);
        Tensor freq = inv_freq(c.rot);
        std::vector<double> y = ops::rope(x, pos_tensor(c, p), freq,
                                          interleaved ? ops::RopeStyle::interleaved : ops::RopeStyle::half, scaling)
                                    .to_doubles();
        std::vector<double> ref = rope_ref(x, p, c.per_batch, freq, interleaved, scaling);
        ASSERT_EQ(y.size(), ref.size());
        for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 1e-12) << i;
      }
}

TEST(Rope, HalfStyleIsRotateHalf) {
  // head_dim 4, one position with angle pi/2 (cos of float(pi/2) is -4e-8) on pair 0 and 0 on pair 1: (a, b, c, d) ->
  // (-c, b, a, d).
  Tensor x = Tensor::from_values({1, 2, 3, 4}, {1, 1, 1, 4}, DType::f64);
  Tensor freq = Tensor::from_vector<float>({float(M_PI / 2), 0.0f}, {2});
  std::vector<double> y = ops::rope(x, Tensor::from_vector<int64_t>({1}, {1}), freq).to_doubles();
  EXPECT_NEAR(y[0], -3, 1e-6);
  EXPECT_NEAR(y[1], 2, 1e-6);
  EXPECT_NEAR(y[2], 1, 1e-6);
  EXPECT_NEAR(y[3], 4, 1e-6);
}

TEST(Rope, GradcheckBothStylesPartialRotaryAndScaling) {
  for (const Case& c : kCases)
    for (bool interleaved : {false, true}) {
      Tensor pos = pos_tensor(c, positions(c));
      Tensor freq = inv_freq(c.rot, 500.0);
      auto style = interleaved ? ops::RopeStyle::interleaved : ops::RopeStyle::half;
      expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::rope(in[0], pos, freq, style, 1.3); },
                             {rand_leaf(c.x, 40)});
    }
}

TEST(Rope, GradcheckNonContiguousInput) {
  // [B, H, T, D] transposed to [B, T, H, D], as attention code often does.
  Tensor pos = Tensor::from_vector<int64_t>({3, 1, 4, 1, 5}, {1, 5});
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) { return ops::rope(ops::transpose(in[0], 1, 2), pos, inv_freq(8)); },
      {rand_leaf({2, 3, 5, 8}, 41)});
}

TEST(Rope, Bf16UsesBf16CosSin) {
  Generator gen(7);
  Tensor x = randn({1, 6, 2, 64}, gen, DType::bf16);
  Tensor pos = Tensor::from_vector<int64_t>({0, 1, 2, 100, 1000, 4095}, {6});
  std::vector<double> y = ops::rope(x, pos, inv_freq(64)).to_doubles();
  std::vector<double> ref = rope_ref(x, {0, 1, 2, 100, 1000, 4095}, false, inv_freq(64), false, 1.0);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 2e-2 * (std::abs(ref[i]) + 0.1)) << i;
}

TEST(Rope, Errors) {
  Tensor x = rand_leaf({2, 3, 4, 8}, 1, false);
  Tensor pos = Tensor::from_vector<int64_t>({0, 1, 2}, {3});
  EXPECT_NO_THROW(ops::rope(x, Tensor::from_vector<int64_t>({0, 1, 2}, {1, 3}), inv_freq(8)));
  EXPECT_THROW(ops::rope(rand_leaf({3, 4, 8}, 1, false), pos, inv_freq(8)), Error);
  EXPECT_THROW(ops::rope(x, Tensor::from_vector<int64_t>({0, 1}, {2}), inv_freq(8)), Error);
  EXPECT_THROW(ops::rope(x, Tensor::from_vector<int64_t>({0, 1, 2, 3, 4, 5}, {3, 2}), inv_freq(8)), Error);
  EXPECT_THROW(ops::rope(x, Tensor::from_vector<int32_t>({0, 1, 2}, {3}), inv_freq(8)), Error);
  EXPECT_THROW(ops::rope(x, pos, inv_freq(10)), Error);  // R > head_dim
  EXPECT_THROW(ops::rope(x, pos, Tensor::ones({4}, DType::f64)), Error);
  EXPECT_THROW(ops::rope(Tensor::zeros({2, 3, 4, 8}, DType::i64), pos, inv_freq(8)), Error);
}
