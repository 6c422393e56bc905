// ops::dropout: reproducible masks from the generator state, independent of thread count, the
// documented Philox element mapping, statistics, identity / all-zero cases, backward mask, errors.
#include "ops/dropout.h"

#include <gtest/gtest.h>

#include <cmath>

#include "autograd/engine.h"
#include "core/rng.h"
#include "core/threads.h"
#include "gradcheck.h"
#include "kernels/cpu/dropout.h"
#include "ops/view.h"

using namespace automodel;
using automodel::testing::expect_gradients_match;
using automodel::testing::rand_leaf;

TEST(Dropout, SameStateSameMaskOtherStateOtherMask) {
  Tensor x = Tensor::ones({1000, 33});
  Generator gen(42);
  GeneratorState s0 = gen.state();
  std::vector<double> a = ops::dropout(x, 0.3, true, gen).to_doubles();
  GeneratorState s1 = gen.state();
  EXPECT_EQ(s1.offset, s0.offset + (1000 * 33 + 3) / 4);  // one Philox block per four elements
  std::vector<double> b = ops::dropout(x, 0.3, true, gen).to_doubles();
  gen.set_state(s0);
  std::vector<double> c = ops::dropout(x, 0.3, true, gen).to_doubles();
  EXPECT_EQ(a, c);
  EXPECT_NE(a, b);
  Generator other(43);
  EXPECT_NE(a, ops::dropout(x, 0.3, true, other).to_doubles());
}

TEST(Dropout, MaskIsThePhiloxStreamInAnyThreadCount) {
  const int64_t n = 4099;
  Tensor x = Tensor::ones({n});
  const double p = 0.25;
  Generator gen(7);
  gen.reserve(5);
  GeneratorState s = gen.state();
  int before = num_threads();
  set_num_threads(1);
  std::vector<double> one = ops::dropout(x, p, true, gen).to_doubles();
  gen.set_state(s);
  set_num_threads(2);
  std::vector<double> two = ops::dropout(x, p, true, gen).to_doubles();
  set_num_threads(before);
  EXPECT_EQ(one, two);
  std::vector<uint8_t> mask(static_cast<size_t>(n));
  cpu::dropout_mask(mask.data(), n, p, s.seed, s.offset);
  for (int64_t i = 0; i < n; ++i) {
    float u = uint32_to_unit_float(philox4x32(s.seed, s.offset + uint64_t(i / 4))[size_t(i % 4)]);
    bool keep = u >= p;
    ASSERT_EQ(one[size_t(i)], keep ? double(float(1.0 / (1.0 - p))) : 0.0) << i;
    ASSERT_EQ(mask[size_t(i)], keep ? 1 : 0) << i;
  }
}

TEST(Dropout, StatisticsPreserveTheMean) {
  Generator gen(3);
  for (double p : {0.1, 0.5, 0.9}) {
    const int64_t n = 400000;
    std::vector<double> y = ops::dropout(Tensor::ones({n}), p, true, gen).to_doubles();
    double sum = 0, zeros = 0;
    for (double v : y) {
      sum += v;
      zeros += v == 0;
    }
    // Binomial standard deviations: zero fraction sqrt(p(1-p)/n) <= 8e-4; mean sqrt(p/((1-p)n)) <= 5e-3.
    EXPECT_NEAR(zeros / double(n), p, 5e-3) << p;
    EXPECT_NEAR(sum / double(n), 1.0, p < 0.8 ? 6e-3 : 2.5e-2) << p;
  }
}

TEST(Dropout, BackwardUsesTheForwardMask) {
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    Generator gen(9);
    Tensor x = rand_leaf({37, 29}, 1, false);
    if (dt != DType::f64) x = Tensor::from_values(x.to_doubles(), x.shape(), dt);
    x.set_requires_grad(true);
    Tensor y = ops::dropout(x, 0.4, true, gen);
    gen.reserve(100);  // later draws must not change the saved mask
    Tensor g = Tensor::full(y.shape(), 2.0, dt);
    autograd::backward({y}, {g});
    std::vector<double> yv = y.to_doubles(), xv = x.to_doubles(), gx = x.grad().to_doubles();
    const double scale = 1.0 / 0.6, tol = dt == DType::bf16 ? 1e-2 : 1e-6;
    int dropped = 0;
    for (size_t i = 0; i < yv.size(); ++i) {
      bool kept = yv[i] != 0 || xv[i] == 0;
      dropped += !kept;
      EXPECT_NEAR(gx[i], kept ? 2.0 * scale : 0.0, tol * 2 * scale);
      if (kept) {
        EXPECT_NEAR(yv[i], xv[i] * scale, tol * std::abs(xv[i] * scale));
      }
    }
    EXPECT_GT(dropped, 300);
    EXPECT_LT(dropped, 560);
  }
}

TEST(Dropout, GradientByFiniteDifferences) {
  Generator gen(5);
  const GeneratorState s = gen.state();
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) {
        gen.set_state(s);  // the same mask on every evaluation
        return ops::dropout(in[0], 0.35, true, gen);
      },
      {rand_leaf({9, 17}, 2)});
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) {
        gen.set_state(s);
        return ops::dropout(ops::transpose(in[0], 0, 1), 0.5, true, gen);
      },
      {rand_leaf({5, 7}, 3)});
}

TEST(Dropout, IdentityAllZerosAndErrors) {
  Tensor x = rand_leaf({4, 5}, 1);
  Generator gen(1);
  EXPECT_TRUE(ops::dropout(x, 0.0, true, gen).same(x));
  EXPECT_TRUE(ops::dropout(x, 0.5, false, gen).same(x));
  EXPECT_EQ(gen.state().offset, 0u);
  Tensor z = ops::dropout(x, 1.0, true, gen);
  EXPECT_EQ(z.to_doubles(), std::vector<double>(20, 0.0));
  autograd::backward({z}, {Tensor::ones({4, 5}, DType::f64)});
  EXPECT_EQ(x.grad().to_doubles(), std::vector<double>(20, 0.0));
  EXPECT_THROW(ops::dropout(x, -0.1, true, gen), Error);
  EXPECT_THROW(ops::dropout(x, 1.5, true, gen), Error);
  EXPECT_THROW(ops::dropout(x, NAN, true, gen), Error);
  EXPECT_THROW(ops::dropout(Tensor::zeros({3}, DType::i64), 0.5, true, gen), Error);
  EXPECT_EQ(gen.state().offset, 0u);
}
