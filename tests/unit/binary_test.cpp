// ops::add / sub / mul / div / scale: broadcasting shapes and values, gradients (summed back to
// each input's shape) by finite differences, strided inputs, bf16, errors.
#include "ops/binary.h"

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

// Pairs of shapes that broadcast, incl. sizes that are not a multiple of the vector width.
const std::vector<std::pair<Shape, Shape>> kPairs = {
    {{7, 33}, {7, 33}},     {{3, 1, 5}, {4, 1}}, {{5, 19}, {19}},  {{5, 19}, {5, 1}},         {{2, 3}, {}},
    {{}, {4, 3}},           {{1}, {17}},         {{4, 1}, {1, 6}}, {{2, 1, 3, 1}, {5, 1, 4}}, {{6, 17}, {1, 17}},
    {{3, 4, 5}, {3, 4, 5}},
};

// A leaf with |values| >= 0.5, safe as a divisor.
Tensor divisor_leaf(const Shape& shape, uint64_t seed) {
  std::vector<double> v = rand_leaf(shape, seed, false).to_doubles();
  for (double& e : v) e = e >= 0 ? e + 0.5 : e - 0.5;
  Tensor t = Tensor::from_values(v, shape, DType::f64);
  t.set_requires_grad(true);
  return t;
}

// Reference: index of the broadcast element of `in` for flat output index i.
double bcast_at(const std::vector<double>& v, const Shape& in, const Shape& out, int64_t i) {
  int64_t off = 0, stride = 1;
  const size_t lead = out.size() - in.size();
  for (size_t d = out.size(); d-- > 0;) {
    int64_t idx = i % out[d];
    i /= out[d];
    if (d < lead) continue;
    int64_t size = in[d - lead];
    if (size != 1) off += idx * stride;
    stride *= size;
  }
  return v[size_t(off)];
}

std::vector<double> reference(char op, const Tensor& a, const Tensor& b) {
  Shape out = ops::broadcast_shapes(a.shape(), b.shape());
  std::vector<double> av = a.to_doubles(), bv = b.to_doubles(), r(size_t(shape_numel(out)));
  for (int64_t i = 0; i < int64_t(r.size()); ++i) {
    double x = bcast_at(av, a.shape(), out, i), y = bcast_at(bv, b.shape(), out, i);
    r[size_t(i)] = op == '+' ? x + y : op == '-' ? x - y : op == '*' ? x * y : x / y;
  }
  return r;
}

}  // namespace

TEST(Binary, BroadcastShapes) {
  EXPECT_EQ(ops::broadcast_shapes({3, 1, 5}, {4, 1}), (Shape{3, 4, 5}));
  EXPECT_EQ(ops::broadcast_shapes({}, {2, 3}), (Shape{2, 3}));
  EXPECT_EQ(ops::broadcast_shapes({5, 1}, {1}), (Shape{5, 1}));
  EXPECT_EQ(ops::broadcast_shapes({0, 1}, {1, 4}), (Shape{0, 4}));
  try {
    ops::broadcast_shapes({2, 3}, {4});
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("[2, 3]"), std::string::npos) << m;
    EXPECT_NE(m.find("[4]"), std::string::npos) << m;
  }
}

TEST(Binary, ValuesMatchBroadcastReference) {
  for (auto& [sa, sb] : kPairs) {
    Tensor a = rand_leaf(sa, 1, false), b = divisor_leaf(sb, 2).detach();
    for (char op : {'+', '-', '*', '/'}) {
      Tensor r = op == '+' ? a + b : op == '-' ? a - b : op == '*' ? a * b : a / b;
      EXPECT_EQ(r.shape(), ops::broadcast_shapes(sa, sb));
      std::vector<double> got = r.to_doubles(), want = reference(op, a, b);
      for (size_t i = 0; i < got.size(); ++i) ASSERT_DOUBLE_EQ(got[i], want[i]) << op << " at " << i;
    }
  }
}

TEST(Binary, F32AndBf16ValuesOnLongRows) {
  for (DType dt : {DType::f32, DType::bf16}) {
    Generator gen(5);
    Tensor a = randn({3, 1001}, gen, dt), bias = randn({1001}, gen, dt), s = randn({}, gen, dt);
    std::vector<double> r = (a + bias).to_doubles(), av = a.to_doubles(), bv = bias.to_doubles();
    double tol = dt == DType::bf16 ? 1.6e-2 : 1e-6;
    for (size_t i = 0; i < r.size(); ++i) ASSERT_NEAR(r[i], av[i] + bv[i % 1001], tol * (1 + std::abs(r[i])));
    std::vector<double> m = (s * a).to_doubles();
    for (size_t i = 0; i < m.size(); ++i) ASSERT_NEAR(m[i], av[i] * s.item(), tol * (1 + std::abs(m[i])));
    EXPECT_EQ((a * a).dtype(), dt);
  }
}

TEST(Binary, GradientsAllOpsAllBroadcasts) {
  for (auto& [sa, sb] : kPairs) {
    SCOPED_TRACE(shape_str(sa) + " op " + shape_str(sb));
    expect_gradients_match([](const std::vector<Tensor>& in) { return ops::add(in[0], in[1]); },
                           {rand_leaf(sa, 1), rand_leaf(sb, 2)});
    expect_gradients_match([](const std::vector<Tensor>& in) { return ops::sub(in[0], in[1]); },
                           {rand_leaf(sa, 3), rand_leaf(sb, 4)});
    expect_gradients_match([](const std::vector<Tensor>& in) { return ops::mul(in[0], in[1]); },
                           {rand_leaf(sa, 5), rand_leaf(sb, 6)});
    expect_gradients_match([](const std::vector<Tensor>& in) { return ops::div(in[0], in[1]); },
                           {rand_leaf(sa, 7), divisor_leaf(sb, 8)}, 1e-6, 1e-5);
  }
}

TEST(Binary, GradientOfOneInputOnly) {
  Tensor a = rand_leaf({4, 5}, 1), b = divisor_leaf({5}, 2).detach();
  expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::div(in[0], b); }, {a}, 1e-6, 1e-5);
  Tensor c = rand_leaf({4, 5}, 3).detach();
  expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::div(c, in[0]); }, {divisor_leaf({4, 1}, 4)},
                         1e-6, 1e-5);
  expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::mul(c, in[0]); }, {rand_leaf({5}, 5)});
  expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::sub(c, in[0]); }, {rand_leaf({1, 5}, 6)});
}

TEST(Binary, SameTensorTwiceAndStridedInputs) {
  expect_gradients_match([](const std::vector<Tensor>& in) { return ops::mul(in[0], in[0]); }, {rand_leaf({3, 7}, 1)});
  // Transposed and sliced operands are read through their strides.
  expect_gradients_match([](const std::vector<Tensor>& in) { return ops::mul(ops::transpose(in[0], 0, 1), in[1]); },
                         {rand_leaf({5, 3}, 2), rand_leaf({3, 5}, 3)});
  expect_gradients_match(
      [](const std::vector<Tensor>& in) {
        return ops::div(ops::slice(in[0], 1, 0, 9, 2), ops::transpose(in[1], 0, 1));
      },
      {rand_leaf({4, 9}, 4), divisor_leaf({5, 1}, 5)}, 1e-6, 1e-5);
  Tensor x = rand_leaf({6, 4}, 6, false);
  Tensor xt = ops::transpose(x, 0, 1);
  Tensor r = xt + xt;
  std::vector<double> xv = x.to_doubles(), rv = r.to_doubles();
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 6; ++j) EXPECT_EQ(rv[size_t(i * 6 + j)], 2 * xv[size_t(j * 4 + i)]);
}

TEST(Binary, LargeTensorsAcrossThreads) {
  Generator gen(3);
  Tensor a = randn({300, 1000}, gen, DType::f64), b = randn({1000}, gen, DType::f64),
         c = randn({300, 1}, gen, DType::f64);
  std::vector<double> av = a.to_doubles(), bv = b.to_doubles(), cv = c.to_doubles();
  std::vector<double> r = ((a - b) * c).to_doubles();
  for (size_t i = 0; i < r.size(); ++i) ASSERT_DOUBLE_EQ(r[i], (av[i] - bv[i % 1000]) * cv[i / 1000]);
  std::vector<double> s = (a * 2.5).to_doubles();
  for (size_t i = 0; i < s.size(); ++i) ASSERT_DOUBLE_EQ(s[i], av[i] * 2.5);
}

TEST(Binary, ScaleGradient) {
  expect_gradients_match([](const std::vector<Tensor>& in) { return ops::scale(in[0], -1.75); },
                         {rand_leaf({3, 17}, 1)});
  expect_gradients_match([](const std::vector<Tensor>& in) { return ops::transpose(in[0], 0, 1) * 3.0; },
                         {rand_leaf({4, 5}, 2)});
}

TEST(Binary, Errors) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4});
  try {
    ops::add(a, b);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("add"), std::string::npos) << m;
    EXPECT_NE(m.find("[2, 3]"), std::string::npos) << m;
    EXPECT_NE(m.find("[4]"), std::string::npos) << m;
  }
  EXPECT_THROW(ops::mul(Tensor::zeros({2, 3}), Tensor::zeros({3, 2})), Error);
  EXPECT_THROW(ops::add(Tensor::zeros({3}), Tensor::zeros({3}, DType::f64)), Error);
  EXPECT_THROW(ops::sub(Tensor::zeros({3}, DType::bf16), Tensor::zeros({3})), Error);
  EXPECT_THROW(ops::div(Tensor::zeros({3}, DType::i64), Tensor::zeros({3}, DType::i64)), Error);
  EXPECT_THROW(ops::add(Tensor(), a), Error);
  EXPECT_THROW(ops::scale(Tensor::zeros({3}, DType::i32), 2.0), Error);
}
