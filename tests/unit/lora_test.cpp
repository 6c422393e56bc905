// ops::lora_linear: f64 gradient checks for every input (with and without bias, dropout pre and post,
// odd sizes), agreement with the unfused composition, the regenerated dropout mask, the frozen bf16
// base under f32 activations, nn::Linear's adapter hook and its parameter names, and input errors.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/engine.h"
#include "core/rng.h"
#include "error_of.h"
#include "gradcheck.h"
#include "nn/linear.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "ops/dropout.h"
#include "ops/lora_linear.h"
#include "ops/matmul.h"

using namespace automodel;
using automodel::testing::error_of;
using automodel::testing::expect_gradients_match;
using automodel::testing::rand_leaf;

namespace {

struct Case {
  Shape x_shape;
  int64_t out, rank;
  bool bias;
  double dropout;
  ops::LoraDropoutPosition position;
};

// The op with dropout drawn from a fresh generator per call, so every finite-difference evaluation
// sees the same mask.
Tensor run(const std::vector<Tensor>& in, const Case& c, double scale) {
  Generator gen(99);
  ops::LoraOptions o;
  o.scale = scale;
  o.dropout = c.dropout;
  o.dropout_position = c.position;
  o.generator = &gen;
  return ops::lora_linear(in[0], in[1], c.bias ? in[2] : Tensor(), in[3], in[4], o);
}

std::vector<double> max_abs_diff_ref(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_doubles(), y = b.to_doubles();
  double m = 0, r = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i])), r = std::max(r, std::abs(y[i]));
  return {m, r};
}

}  // namespace

TEST(LoraLinear, GradientsMatchFiniteDifferences) {
  using P = ops::LoraDropoutPosition;
  const std::vector<Case> cases = {
      {{5, 7}, 3, 2, true, 0.0, P::pre},     {{2, 3, 17}, 19, 4, false, 0.0, P::pre},
      {{4, 9}, 6, 3, true, 0.3, P::pre},     {{3, 2, 11}, 13, 5, true, 0.25, P::post},
      {{1, 33}, 18, 1, false, 0.5, P::post}, {{6, 16}, 16, 8, true, 0.1, P::pre},
  };
  uint64_t seed = 1;
  for (const Case& c : cases) {
    const int64_t in = c.x_shape.back();
    std::vector<Tensor> inputs = {rand_leaf(c.x_shape, seed++), rand_leaf({c.out, in}, seed++),
                                  rand_leaf({c.out}, seed++, c.bias), rand_leaf({c.rank, in}, seed++),
                                  rand_leaf({c.out, c.rank}, seed++)};
    SCOPED_TRACE(::testing::Message() << "x " << inputs[0].describe() << " rank " << c.rank << " dropout "
                                      << c.dropout);
    expect_gradients_match([&](const std::vector<Tensor>& in) { return run(in, c, 1.7); }, inputs);
  }
}

TEST(LoraLinear, FrozenBaseGivesOnlyAdapterAndInputGradients) {
  Case c{{4, 10}, 7, 3, true, 0.2, ops::LoraDropoutPosition::pre};
  std::vector<Tensor> inputs = {rand_leaf({4, 10}, 1), rand_leaf({7, 10}, 2, false), rand_leaf({7}, 3, false),
                                rand_leaf({3, 10}, 4), rand_leaf({7, 3}, 5)};
  expect_gradients_match([&](const std::vector<Tensor>& in) { return run(in, c, 0.5); }, inputs);
  EXPECT_FALSE(inputs[1].grad().defined());
}

// The fused op equals linear + scale * B(A(dropout(x))) composed from separate ops, mask included.
TEST(LoraLinear, MatchesTheComposition) {
  for (auto pos : {ops::LoraDropoutPosition::pre, ops::LoraDropoutPosition::post}) {
    Tensor x = rand_leaf({3, 5, 24}, 11), w = rand_leaf({20, 24}, 12), b = rand_leaf({20}, 13);
    Tensor a = rand_leaf({4, 24}, 14), bb = rand_leaf({20, 4}, 15);
    Generator g1(5), g2(5);
    ops::LoraOptions o;
    o.scale = 2.0;
    o.dropout = 0.4;
    o.dropout_position = pos;
    o.generator = &g1;
    Tensor fused = ops::lora_linear(x, w, b, a, bb, o);
    Tensor ref;
    if (pos == ops::LoraDropoutPosition::pre) {
      Tensor branch = ops::linear(ops::linear(ops::dropout(x, 0.4, true, g2), a), bb);
      ref = ops::linear(x, w, b) + ops::scale(branch, 2.0);
    } else {
      Tensor branch = ops::scale(ops::linear(ops::linear(x, a), bb), 2.0);
      ref = ops::linear(x, w, b) + ops::dropout(branch, 0.4, true, g2);
    }
    EXPECT_EQ(g1.state().offset, g2.state().offset);
    auto e = max_abs_diff_ref(fused, ref);
    EXPECT_LE(e[0], 1e-12 * e[1]);
    Tensor gy = rand_leaf(fused.shape(), 16, false);
    autograd::backward({fused}, {gy});
    std::vector<Tensor> fused_grads = {x.grad(), w.grad(), b.grad(), a.grad(), bb.grad()};
    for (Tensor t : {x, w, b, a, bb}) t.set_grad(Tensor());
    autograd::backward({ref}, {gy});
    std::vector<Tensor> ref_grads = {x.grad(), w.grad(), b.grad(), a.grad(), bb.grad()};
    for (size_t i = 0; i < 5; ++i) {
      auto d = max_abs_diff_ref(fused_grads[i], ref_grads[i]);
      EXPECT_LE(d[0], 1e-12 * d[1]) << "gradient " << i;
    }
  }
}

TEST(LoraLinear, EvalModeHasNoDropoutAndDrawsNothing) {
  Tensor x = rand_leaf({4, 8}, 1, false), w = rand_leaf({5, 8}, 2, false);
  Tensor a = rand_leaf({2, 8}, 3, false), b = rand_leaf({5, 2}, 4, false);
  Generator gen(3);
  ops::LoraOptions o;
  o.dropout = 0.5;
  o.training = false;
  o.generator = &gen;
  Tensor y = ops::lora_linear(x, w, Tensor(), a, b, o);
  EXPECT_EQ(gen.state().offset, 0u);
  Tensor ref = ops::linear(x, w) + ops::linear(ops::linear(x, a), b);
  EXPECT_LE(max_abs_diff_ref(y, ref)[0], 1e-12);
}

// A bf16 base under f32 activations: base GEMM on x rounded to bf16, adapter branch in f32.
TEST(LoraLinear, FrozenBf16BaseUnderF32Activations) {
  Generator gen(8);
  Tensor x = randn({6, 40}, gen), w32 = randn({24, 40}, gen), bias32 = randn({24}, gen);
  Tensor a = randn({4, 40}, gen), b = randn({24, 4}, gen);
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  x.set_requires_grad(true);
  Tensor w = ops::to_dtype(w32, DType::bf16), bias = ops::to_dtype(bias32, DType::bf16);
  ops::LoraOptions o;
  o.scale = 0.75;
  Tensor y = ops::lora_linear(x, w, bias, a, b, o);
  EXPECT_EQ(y.dtype(), DType::f32);
  // Reference in f64: base on bf16-rounded x and weights, adapters exact.
  auto d = [](const Tensor& t) { return ops::to_dtype(t.detach(), DType::f64); };
  Tensor xr = d(ops::to_dtype(x.detach(), DType::bf16));
  Tensor ref = ops::linear(xr, d(w), d(bias)) + ops::scale(ops::linear(ops::linear(d(x), d(a)), d(b)), 0.75);
  auto e = max_abs_diff_ref(y, ref);
  EXPECT_LE(e[0], 1e-5 * e[1]);
  Tensor gy = randn({6, 24}, gen);
  autograd::backward({y}, {gy});
  EXPECT_TRUE(a.grad().defined() && b.grad().defined() && x.grad().defined());
  // dA = scale * (gy B)^T x in f64.
  Tensor gu = ops::scale(ops::matmul(d(gy), d(b)), 0.75);
  Tensor da_ref = ops::matmul(gu, d(x), true, false);
  auto ea = max_abs_diff_ref(a.grad(), da_ref);
  EXPECT_LE(ea[0], 1e-5 * ea[1]);
  // dx = gy W (gy rounded to bf16 for the base) + gu A.
  Tensor dx_ref = ops::matmul(d(ops::to_dtype(gy, DType::bf16)), d(w)) + ops::matmul(gu, d(a));
  auto ex = max_abs_diff_ref(x.grad(), dx_ref);
  EXPECT_LE(ex[0], 1e-5 * ex[1]);
}

TEST(LoraLinear, Bf16ThroughoutIsCloseToF64) {
  Generator gen(9);
  Tensor x = randn({5, 3, 48}, gen), w = randn({40, 48}, gen), a = randn({8, 48}, gen), b = randn({40, 8}, gen);
  auto bf = [](const Tensor& t) { return ops::to_dtype(t, DType::bf16); };
  auto d = [](const Tensor& t) { return ops::to_dtype(ops::to_dtype(t, DType::bf16), DType::f64); };
  ops::LoraOptions o;
  o.scale = 0.5;
  Tensor y = ops::lora_linear(bf(x), bf(w), Tensor(), bf(a), bf(b), o);
  Tensor ref = ops::linear(d(x), d(w)) + ops::scale(ops::linear(ops::linear(d(x), d(a)), d(b)), 0.5);
  auto e = max_abs_diff_ref(y, ref);
  EXPECT_LE(e[0], 1e-2 * e[1]);
}

// f32 and bf16 runs (the low-rank kernels at ranks <= 16, GEMMs above) against f64 on the same
// values: output and every gradient, with dropout pre and post, whole and partial column blocks.
TEST(LoraLinear, F32AndBf16MatchF64) {
  using P = ops::LoraDropoutPosition;
  const std::vector<Case> cases = {{{37, 80}, 70, 8, true, 0.0, P::pre},
                                   {{2, 19, 64}, 96, 16, false, 0.2, P::pre},
                                   {{23, 48}, 40, 3, true, 0.3, P::post},
                                   {{17, 40}, 36, 20, false, 0.0, P::pre}};
  uint64_t seed = 40;
  for (const Case& c : cases) {
    const int64_t in = c.x_shape.back();
    std::vector<Tensor> values = {rand_leaf(c.x_shape, seed++, false), rand_leaf({c.out, in}, seed++, false),
                                  rand_leaf({c.out}, seed++, false), rand_leaf({c.rank, in}, seed++, false),
                                  rand_leaf({c.out, c.rank}, seed++, false)};
    Shape y_shape = c.x_shape;
    y_shape.back() = c.out;
    const Tensor gy_values = rand_leaf(y_shape, seed++, false);
    for (Tensor& v : values) v = ops::to_dtype(ops::to_dtype(v, DType::bf16), DType::f64);  // exact in every dtype
    auto run_in = [&](DType dt, std::vector<Tensor>& grads) {
      std::vector<Tensor> leaves;
      for (const Tensor& v : values) leaves.push_back(ops::to_dtype(v, dt).detach().set_requires_grad(true));
      Tensor y = run(leaves, c, 1.25);
      autograd::backward({y}, {ops::to_dtype(gy_values, dt)});
      for (size_t i = 0; i < leaves.size(); ++i)
        if (i != 2 || c.bias) grads.push_back(leaves[i].grad());
      return y;
    };
    std::vector<Tensor> ref_grads;
    const Tensor ref = run_in(DType::f64, ref_grads);
    for (auto [dt, tol] : {std::pair{DType::f32, 1e-5}, std::pair{DType::bf16, 3e-2}}) {
      SCOPED_TRACE(::testing::Message() << dtype_name(dt) << " x " << values[0].describe() << " rank " << c.rank
                                        << " dropout " << c.dropout);
      std::vector<Tensor> grads;
      auto e = max_abs_diff_ref(run_in(dt, grads), ref);
      EXPECT_LE(e[0], tol * e[1]);
      for (size_t i = 0; i < grads.size(); ++i) {
        auto g = max_abs_diff_ref(grads[i], ref_grads[i]);
        EXPECT_LE(g[0], tol * g[1]) << "gradient " << i;
      }
    }
  }
}

TEST(LoraLinear, BadInputsAreClearErrors) {
  Tensor x = Tensor::zeros({2, 8}), w = Tensor::zeros({4, 8}), a = Tensor::zeros({2, 8}), b = Tensor::zeros({4, 2});
  EXPECT_NE(error_of([&] {
              ops::lora_linear(x, w, Tensor(), Tensor::zeros({2, 7}), b);
            }).find("lora_a"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              ops::lora_linear(x, w, Tensor(), a, Tensor::zeros({4, 3}));
            }).find("lora_b"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              ops::lora_linear(Tensor::zeros({2, 9}), w, Tensor(), a, b);
            }).find("features"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ops::lora_linear(x, w, Tensor::zeros({5}), a, b); }).find("bias"), std::string::npos);
  EXPECT_NE(error_of([&] { ops::lora_linear(x, w, Tensor(), ops::to_dtype(a, DType::f64), b); }).find("dtype"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ops::lora_linear(x, ops::to_dtype(w, DType::f64), Tensor(), a, b); }).find("bf16"),
            std::string::npos);
  Tensor wb = ops::to_dtype(w, DType::bf16);
  wb.set_requires_grad(true);
  EXPECT_NE(error_of([&] { ops::lora_linear(x, wb, Tensor(), a, b); }).find("frozen"), std::string::npos);
  ops::LoraOptions o;
  o.dropout = 1.0;
  EXPECT_NE(error_of([&] { ops::lora_linear(x, w, Tensor(), a, b, o); }).find("dropout"), std::string::npos);
  EXPECT_NE(error_of([&] {
              ops::lora_linear(Tensor::zeros({2, 8}, DType::i64), w, Tensor(), a, b);
            }).find("dtype"),
            std::string::npos);
}

TEST(LinearLoraHook, NamesForwardAndDetach) {
  nn::Linear lin(8, 6, true);
  Generator gen(4);
  Tensor x = randn({3, 8}, gen);
  Tensor plain = lin.forward(x);
  Tensor a = randn({2, 8}, gen), b = randn({6, 2}, gen);
  nn::LoraSettings s;
  s.scale = 3.0;
  lin.attach_lora(a, b, s);
  std::vector<std::string> names;
  for (auto& [n, t] : lin.named_parameters("q_proj")) names.push_back(n);
  EXPECT_EQ(names,
            (std::vector<std::string>{"q_proj.weight", "q_proj.bias", "q_proj.lora_A.weight", "q_proj.lora_B.weight"}));
  Tensor y = lin.forward(x);
  Tensor ref = plain + ops::scale(ops::linear(ops::linear(x, a), b), 3.0);
  EXPECT_LE(max_abs_diff_ref(y, ref)[0], 1e-5);
  lin.detach_lora();
  EXPECT_EQ(lin.named_parameters().size(), 2u);
  EXPECT_LE(max_abs_diff_ref(lin.forward(x), plain)[0], 0.0);
  EXPECT_NE(error_of([&] { lin.attach_lora(randn({2, 7}, gen), b, s); }).find("lora_A"), std::string::npos);
}

// A bf16 model with f32 adapters: x is cast to f32 for the op and the result back to bf16.
TEST(LinearLoraHook, Bf16BaseWithF32Adapters) {
  nn::Linear lin(16, 12, false, DType::bf16);
  lin.weight.set_requires_grad(false);
  Generator gen(6);
  Tensor a = randn({4, 16}, gen), b = randn({12, 4}, gen);
  lin.attach_lora(a, b, {});
  Tensor x = ops::to_dtype(randn({5, 16}, gen), DType::bf16);
  Tensor y = lin.forward(x);
  EXPECT_EQ(y.dtype(), DType::bf16);
  autograd::backward({ops::to_dtype(y, DType::f32)}, {Tensor::ones({5, 12})});
  EXPECT_TRUE(lin.lora_A().grad().defined());
  EXPECT_EQ(lin.lora_A().grad().dtype(), DType::f32);
}
