// ops::to_dtype and kernels/cpu/cast: rounding, special values, vector/scalar agreement, gradients.
#include "kernels/cpu/cast.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "autograd/engine.h"
#include "gradcheck.h"
#include "ops/cast.h"
#include "ops/view.h"

using namespace automodel;
using automodel::testing::expect_gradients_match;
using automodel::testing::rand_leaf;

namespace {
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Inputs that stress every branch, in a buffer long enough for the vector body and a tail.
std::vector<float> tricky_floats() {
  std::vector<float> v;
  for (uint32_t hi : {0x3f80u, 0x3f81u, 0x7f7fu, 0x0001u, 0x0080u, 0x8000u, 0xbf80u, 0x387fu, 0x3380u, 0x477fu})
    for (uint32_t lo : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu, 0x1000u, 0x2000u, 0x3000u})
      v.push_back(from_bits((hi << 16) | lo));
  for (float f : {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 65504.0f, 65520.0f, 1e-45f, 3.0e-8f, 1e30f})
    v.push_back(f);
  v.push_back(from_bits(0x7f800001u));  // signalling NaN
  v.push_back(from_bits(0xffc12345u));  // negative NaN with payload
  for (int i = 0; i < 200; ++i) v.push_back(float(std::sin(i * 0.37) * std::pow(10.0, i % 13 - 6)));
  return v;
}
}  // namespace

TEST(Cast, VectorBodyMatchesScalarConversions) {
  std::vector<float> src = tricky_floats();
  const int64_t n = int64_t(src.size());
  std::vector<bf16> b(src.size());
  std::vector<f16> h(src.size());
  cpu::cast(src.data(), b.data(), n);
  cpu::cast(src.data(), h.data(), n);
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(b[i].bits, float_to_bf16(src[i]).bits) << "bf16 of " << src[i] << " at " << i;
    EXPECT_EQ(h[i].bits, float_to_f16(src[i]).bits) << "f16 of " << src[i] << " at " << i;
  }
  std::vector<float> back_b(src.size()), back_h(src.size());
  cpu::cast(b.data(), back_b.data(), n);
  cpu::cast(h.data(), back_h.data(), n);
  for (size_t i = 0; i < src.size(); ++i) {
    float eb = bf16_to_float(b[i]), eh = f16_to_float(h[i]);
    if (std::isnan(eb)) {
      EXPECT_TRUE(std::isnan(back_b[i]));
    } else {
      EXPECT_EQ(back_b[i], eb);
    }
    if (std::isnan(eh)) {
      EXPECT_TRUE(std::isnan(back_h[i]));
    } else {
      EXPECT_EQ(back_h[i], eh);
    }
  }
}

TEST(Cast, RoundsToNearestEvenAndKeepsSpecials) {
  Tensor x = Tensor::from_vector<float>({1.00390625f, 1.01171875f, INFINITY, -INFINITY, NAN, 3.4e38f, -0.0f}, {7});
  Tensor b = ops::to_dtype(x, DType::bf16);
  const bf16* p = b.data<bf16>();
  EXPECT_EQ(p[0].bits, 0x3f80);  // tie -> even (down)
  EXPECT_EQ(p[1].bits, 0x3f82);  // tie -> even (up)
  EXPECT_EQ(p[2].bits, 0x7f80);
  EXPECT_EQ(p[3].bits, 0xff80);
  EXPECT_TRUE(std::isnan(bf16_to_float(p[4])));
  EXPECT_EQ(p[5].bits, 0x7f80);  // overflow -> inf
  EXPECT_EQ(p[6].bits, 0x8000);
  Tensor h = ops::to_dtype(
      Tensor::from_vector<float>({1.0f + 1.0f / 2048, 65520.0f, 5.9604645e-08f, 2.9802322e-08f}, {4}), DType::f16);
  const f16* q = h.data<f16>();
  EXPECT_EQ(q[0].bits, 0x3c00);  // tie -> even
  EXPECT_EQ(q[1].bits, 0x7c00);  // overflow -> inf
  EXPECT_EQ(q[2].bits, 0x0001);  // smallest subnormal
  EXPECT_EQ(q[3].bits, 0x0000);  // half of it: tie -> even (0)
}

TEST(Cast, AllPairsRoundTripRepresentableValues) {
  // Values exact in every floating dtype survive any chain of casts.
  std::vector<double> vals;
  for (int i = -40; i < 40; ++i) vals.push_back(i * 0.25);
  const DType all[] = {DType::f32, DType::f64, DType::bf16, DType::f16};
  for (DType from : all)
    for (DType to : all) {
      Tensor x = Tensor::from_values(vals, {80}, from);
      Tensor y = ops::to_dtype(x, to);
      EXPECT_EQ(y.dtype(), to);
      EXPECT_EQ(y.to_doubles(), vals) << dtype_name(from) << " -> " << dtype_name(to);
    }
}

TEST(Cast, DoubleToBf16GoesThroughFloat) {
  // 1 + 2^-8 + 2^-40: f32 rounds it to the tie 1 + 2^-8, which bf16 rounds to even (1.0), as torch does.
  Tensor x = Tensor::from_values({1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40)}, {1}, DType::f64);
  EXPECT_EQ(ops::to_dtype(x, DType::bf16).to_doubles()[0], 1.0);
}

TEST(Cast, IntegerAndBoolTargets) {
  Tensor x = Tensor::from_vector<float>({-2.7f, 0.0f, 3.9f, NAN, 1e20f, -1e20f}, {6});
  Tensor i = ops::to_dtype(x, DType::i32);
  const int32_t* p = i.data<int32_t>();
  EXPECT_EQ(p[0], -2);
  EXPECT_EQ(p[2], 3);
  EXPECT_EQ(p[3], 0);
  EXPECT_EQ(p[4], std::numeric_limits<int32_t>::max());
  EXPECT_EQ(p[5], std::numeric_limits<int32_t>::min());
  Tensor bl = ops::to_dtype(x, DType::b8);
  EXPECT_EQ(bl.to_doubles(), (std::vector<double>{1, 0, 1, 1, 1, 1}));
  EXPECT_EQ(ops::to_dtype(bl, DType::bf16).to_doubles(), (std::vector<double>{1, 0, 1, 1, 1, 1}));
}

TEST(Cast, SameDtypeReturnsInputAndStridedInputsWork) {
  Tensor x = rand_leaf({3, 4}, 1);
  EXPECT_TRUE(ops::to_dtype(x, DType::f64).same(x));
  Tensor t = ops::transpose(x, 0, 1);
  Tensor y = ops::to_dtype(t, DType::f32);
  EXPECT_EQ(y.shape(), (Shape{4, 3}));
  std::vector<double> want = ops::contiguous(t).to_doubles(), got = y.to_doubles();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(float(got[i]), float(want[i]));
}

TEST(Cast, GradientIsCastBack) {
  // f64 -> f32 -> f64: the gradient check runs in double through an f32 round trip, so the
  // tolerance reflects f32 rounding of the values (the gradient itself is exact: identity).
  Tensor x = rand_leaf({5, 17}, 2);
  expect_gradients_match(
      [](const std::vector<Tensor>& in) { return ops::to_dtype(ops::to_dtype(in[0], DType::f32), DType::f64); }, {x},
      1e-3, 1e-4);
  // The gradient arrives in the output dtype and leaves in the input dtype.
  Tensor leaf = Tensor::from_vector<float>({1.5f, -2.25f, 3.0f}, {3}).set_requires_grad(true);
  Tensor y = ops::to_dtype(leaf, DType::bf16);
  autograd::backward({y}, {Tensor::from_values({0.5, 1.0, 1.00390625}, {3}, DType::bf16)});
  ASSERT_TRUE(leaf.grad().defined());
  EXPECT_EQ(leaf.grad().dtype(), DType::f32);
  EXPECT_EQ(leaf.grad().to_doubles(), (std::vector<double>{0.5, 1.0, 1.0}));  // 1+2^-8 was rounded to bf16 1.0
  // No gradient into integer results.
  Tensor z = ops::to_dtype(leaf, DType::i64);
  EXPECT_FALSE(z.requires_grad());
}

TEST(Cast, Errors) { EXPECT_THROW(ops::to_dtype(Tensor(), DType::f32), Error); }
