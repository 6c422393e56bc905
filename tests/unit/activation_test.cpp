// silu, gelu (erf and tanh), swiglu, geglu_tanh, softcap: values against double formulas (fp32
// and bf16), the vectorised exp / tanh, gradients by finite differences, errors.
#include "kernels/cpu/activation.h"

#include <gtest/gtest.h>

#include <cmath>

#include "autograd/engine.h"
#include "core/rng.h"
#include "gradcheck.h"
#include "kernels/cpu/fast_math.h"
#include "ops/activation.h"
#include "ops/binary.h"
#include "ops/view.h"

using namespace automodel;
using automodel::testing::expect_gradients_match;
using automodel::testing::rand_leaf;

namespace {

const std::vector<Shape> kShapes = {{7}, {3, 33}, {2, 5, 17}, {1}};

double silu_ref(double x) { return x / (1 + std::exp(-x)); }
double gelu_ref(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }
double gelu_tanh_ref(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }

// Inputs spanning the interesting range, incl. saturated tails.
std::vector<double> sample_inputs() {
  std::vector<double> v;
  for (double x = -30; x <= 30; x += 0.173) v.push_back(x);
  for (double x : {0.0, 1e-7, -1e-7, 1e-3, -0.29, 0.31, 88.0, -88.0, 100.0, -100.0, 1e4, -1e4}) v.push_back(x);
  return v;
}

void expect_matches(const std::vector<double>& got, const std::vector<double>& in, double (*ref)(double), double rel,
                    double abs_tol) {
  ASSERT_EQ(got.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    double want = ref(in[i]);
    EXPECT_NEAR(got[i], want, rel * std::abs(want) + abs_tol) << "x = " << in[i];
  }
}

}  // namespace

TEST(Activation, FastExpAndTanhAccuracy) {
  double max_rel = 0;
  for (float x = -87.0f; x < 88.5f; x += 0.0137f) {
    double want = std::exp(double(x));
    max_rel = std::max(max_rel, std::abs(double(cpu::exp_fast(x)) - want) / want);
  }
  EXPECT_LT(max_rel, 3e-7);
  EXPECT_EQ(cpu::exp_fast(-INFINITY), 0.0f);
  EXPECT_EQ(cpu::exp_fast(-100.0f), 0.0f);
  EXPECT_TRUE(std::isinf(cpu::exp_fast(100.0f)));
  EXPECT_TRUE(std::isnan(cpu::exp_fast(NAN)));
  EXPECT_EQ(cpu::exp_fast(0.0f), 1.0f);
  double tanh_rel = 0;
  for (float x = -12.0f; x < 12.0f; x += 0.00371f) {
    double want = std::tanh(double(x));
    if (want != 0) tanh_rel = std::max(tanh_rel, std::abs(double(cpu::tanh_fast(x)) - want) / std::abs(want));
  }
  EXPECT_LT(tanh_rel, 5e-7);
  EXPECT_EQ(cpu::tanh_fast(1e-30f), 1e-30f);
  EXPECT_EQ(cpu::tanh_fast(50.0f), 1.0f);
  EXPECT_EQ(cpu::tanh_fast(-INFINITY), -1.0f);
}

TEST(Activation, ValuesF64F32Bf16) {
  std::vector<double> in = sample_inputs();
  const Shape shape{int64_t(in.size())};
  struct Tol {
    DType dt;
    double rel, abs;
  };
  for (Tol t : {Tol{DType::f64, 1e-11, 1e-300}, Tol{DType::f32, 2e-6, 1e-9}, Tol{DType::bf16, 1e-2, 1e-30}}) {
    SCOPED_TRACE(dtype_name(t.dt));
    Tensor x = Tensor::from_values(in, shape, t.dt);
    std::vector<double> xin = x.to_doubles();  // bf16-rounded inputs
    expect_matches(ops::silu(x).to_doubles(), xin, silu_ref, t.rel, t.abs);
    expect_matches(ops::gelu(x).to_doubles(), xin, gelu_ref, t.rel, t.abs);
    expect_matches(ops::gelu(x, true).to_doubles(), xin, gelu_tanh_ref, t.rel,
                   t.abs + 2e-7);  // 1 + tanh cancels, as in torch
    std::vector<double> sc = ops::softcap(x, 30.0).to_doubles();
    for (size_t i = 0; i < in.size(); ++i)
      EXPECT_NEAR(sc[i], 30 * std::tanh(xin[i] / 30), t.rel * 30 * std::abs(std::tanh(xin[i] / 30)) + t.abs);
    Tensor up = Tensor::from_values(std::vector<double>(in.size(), -1.5), shape, t.dt);
    std::vector<double> sw = ops::swiglu(x, up).to_doubles(), gg = ops::geglu_tanh(x, up).to_doubles();
    for (size_t i = 0; i < in.size(); ++i) {
      EXPECT_NEAR(sw[i], -1.5 * silu_ref(xin[i]), t.rel * 1.5 * std::abs(silu_ref(xin[i])) + t.abs);
      EXPECT_NEAR(gg[i], -1.5 * gelu_tanh_ref(xin[i]), t.rel * 1.5 * std::abs(gelu_tanh_ref(xin[i])) + 2e-7);
    }
  }
}

TEST(Activation, Gradients) {
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(shape_str(s));
    expect_gradients_match([](const std::vector<Tensor>& in) { return ops::silu(in[0]); }, {rand_leaf(s, 1)});
    expect_gradients_match([](const std::vector<Tensor>& in) { return ops::gelu(in[0]); }, {rand_leaf(s, 2)});
    expect_gradients_match([](const std::vector<Tensor>& in) { return ops::gelu(in[0], true); }, {rand_leaf(s, 3)});
    expect_gradients_match([](const std::vector<Tensor>& in) { return ops::softcap(in[0], 0.7); }, {rand_leaf(s, 4)});
    expect_gradients_match([](const std::vector<Tensor>& in) { return ops::swiglu(in[0], in[1]); },
                           {rand_leaf(s, 5), rand_leaf(s, 6)});
    expect_gradients_match([](const std::vector<Tensor>& in) { return ops::geglu_tanh(in[0], in[1]); },
                           {rand_leaf(s, 7), rand_leaf(s, 8)});
    // rsqrt on positive inputs (1.5 + x^2).
    expect_gradients_match(
        [](const std::vector<Tensor>& in) {
          return ops::rsqrt(ops::add(ops::mul(in[0], in[0]), Tensor::from_values({1.5}, {1}, DType::f64)));
        },
        {rand_leaf(s, 15)});
  }
  // One gated input only, and strided inputs.
  Tensor up = rand_leaf({4, 9}, 9, false);
  expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::swiglu(in[0], up); },
                         {rand_leaf({4, 9}, 10)});
  Tensor gate = rand_leaf({4, 9}, 11, false);
  expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::geglu_tanh(gate, in[0]); },
                         {rand_leaf({4, 9}, 12)});
  expect_gradients_match([](const std::vector<Tensor>& in) { return ops::swiglu(ops::transpose(in[0], 0, 1), in[1]); },
                         {rand_leaf({9, 4}, 13), rand_leaf({4, 9}, 14)});
}

TEST(Activation, LargeTensorsMatchScalarFormula) {
  Generator gen(3);
  Tensor g = randn({513, 1001}, gen), u = randn({513, 1001}, gen);
  std::vector<double> gv = g.to_doubles(), uv = u.to_doubles(), y = ops::swiglu(g, u).to_doubles();
  for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], silu_ref(gv[i]) * uv[i], 2e-6 * (1 + std::abs(y[i])));
}

TEST(Activation, Errors) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 2});
  EXPECT_THROW(ops::swiglu(a, b), Error);
  EXPECT_THROW(ops::geglu_tanh(a, Tensor::zeros({2, 3}, DType::f64)), Error);
  EXPECT_THROW(ops::silu(Tensor::zeros({2}, DType::i64)), Error);
  EXPECT_THROW(ops::gelu(Tensor()), Error);
  EXPECT_THROW(ops::softcap(a, 0.0), Error);
  EXPECT_THROW(ops::softcap(a, -1.0), Error);
  EXPECT_THROW(ops::softcap(a, NAN), Error);
}
