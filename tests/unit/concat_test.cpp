// concat / split / gather: values, gradients by finite differences (incl. split outputs that get
// no gradient and repeated gather indices), integer tensors, errors.
#include "ops/concat.h"

#include <gtest/gtest.h>

#include "autograd/engine.h"
#include "core/rng.h"
#include "gradcheck.h"
#include "ops/binary.h"
#include "ops/view.h"

using namespace automodel;
using automodel::testing::expect_gradients_match;
using automodel::testing::rand_leaf;

namespace {
Tensor index_tensor(const std::vector<int64_t>& v, const Shape& shape) { return Tensor::from_vector(v, shape); }

// Deterministic pseudo-random indices in [0, n), with repeats.
Tensor random_index(const Shape& shape, int64_t n, uint64_t seed) {
  std::vector<int64_t> v(size_t(shape_numel(shape)));
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (auto& e : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    e = int64_t((s >> 33) % uint64_t(n));
  }
  return index_tensor(v, shape);
}
}  // namespace

TEST(Concat, ValuesAlongEachDim) {
  Tensor a = Tensor::from_values({0, 1, 2, 3, 4, 5}, {2, 3}), b = Tensor::from_values({6, 7}, {2, 1});
  EXPECT_EQ(ops::concat({a, b}, 1).to_doubles(), (std::vector<double>{0, 1, 2, 6, 3, 4, 5, 7}));
  EXPECT_EQ(ops::concat({a, b}, -1).shape(), (Shape{2, 4}));
  Tensor c = Tensor::from_values({8, 9, 10}, {1, 3});
  EXPECT_EQ(ops::concat({a, c, a}, 0).to_doubles(),
            (std::vector<double>{0, 1, 2, 3, 4, 5, 8, 9, 10, 0, 1, 2, 3, 4, 5}));
  // Integer tensors concatenate too, and a transposed input is read through its layout.
  Tensor i = Tensor::from_vector<int64_t>({1, 2, 3, 4}, {2, 2});
  EXPECT_EQ(ops::concat({i, ops::transpose(i, 0, 1)}, 0).to_doubles(), (std::vector<double>{1, 2, 3, 4, 1, 3, 2, 4}));
  // Large rows split across tasks.
  Generator gen(1);
  Tensor x = randn({3, 40000}, gen), y = randn({3, 20001}, gen);
  std::vector<double> xy = ops::concat({x, y}, 1).to_doubles(), xv = x.to_doubles(), yv = y.to_doubles();
  for (size_t r = 0; r < 3; ++r) {
    for (size_t j = 0; j < 40000; ++j) ASSERT_EQ(xy[r * 60001 + j], xv[r * 40000 + j]);
    for (size_t j = 0; j < 20001; ++j) ASSERT_EQ(xy[r * 60001 + 40000 + j], yv[r * 20001 + j]);
  }
}

TEST(Concat, Gradients) {
  for (int64_t dim : {0, 1, -1}) {
    Shape sa{3, 4, 5}, sb{3, 4, 5}, sc{3, 4, 5};
    int64_t d = dim < 0 ? 2 : dim;
    sb[size_t(d)] = 2;
    sc[size_t(d)] = 7;
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::concat(in, dim); },
                           {rand_leaf(sa, 1), rand_leaf(sb, 2), rand_leaf(sc, 3)});
  }
  // One input without grad, one used twice.
  Tensor fixed = rand_leaf({2, 3}, 4, false);
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) {
        return ops::concat({in[0], fixed, in[0]}, 0);
      },
      {rand_leaf({1, 3}, 5)});
}

TEST(Split, ViewsValuesAndGradients) {
  Tensor x = Tensor::from_values({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {2, 5});
  std::vector<Tensor> parts = ops::split(x, {2, 0, 3}, 1);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].to_doubles(), (std::vector<double>{0, 1, 5, 6}));
  EXPECT_EQ(parts[1].shape(), (Shape{2, 0}));
  EXPECT_EQ(parts[2].to_doubles(), (std::vector<double>{2, 3, 4, 7, 8, 9}));
  EXPECT_EQ(parts[2].storage(), x.storage());  // a view, no copy
  for (int64_t dim : {0, 1, -1}) {
    // Reassembled out of order, with the middle piece unused: it gets zero gradient.
    expect_gradients_match(
        [&](const std::vector<Tensor>& in) {
          std::vector<Tensor> p = ops::split(in[0], {1, 2, 3}, dim);
          return ops::concat({p[2], p[0]}, dim);
        },
        {rand_leaf(dim == 0   ? Shape{6, 3, 2}
                   : dim == 1 ? Shape{2, 6, 3}
                              : Shape{2, 3, 6},
                   1)});
  }
  expect_gradients_match(
      [](const std::vector<Tensor>& in) {
        std::vector<Tensor> p = ops::split(ops::transpose(in[0], 0, 1), {4, 3}, 0);
        return ops::mul(p[0], ops::slice(p[0], 0, 0, 1));
      },
      {rand_leaf({5, 7}, 2)});
}

TEST(Gather, ValuesLikeTorch) {
  Tensor x = Tensor::from_values({1, 2, 3, 4}, {2, 2});
  Tensor idx = index_tensor({0, 0, 1, 0}, {2, 2});
  EXPECT_EQ(ops::gather(x, 1, idx).to_doubles(), (std::vector<double>{1, 1, 4, 3}));
  EXPECT_EQ(ops::gather(x, 0, idx).to_doubles(), (std::vector<double>{1, 2, 3, 2}));
  // The label-gather shape: [N, V] with [N, 1].
  Tensor logits = Tensor::from_values({0, 1, 2, 10, 11, 12}, {2, 3});
  EXPECT_EQ(ops::gather(logits, -1, index_tensor({2, 0}, {2, 1})).to_doubles(), (std::vector<double>{2, 10}));
  // Index smaller than x in a non-gather dim.
  Tensor big = Tensor::from_values({0, 1, 2, 3, 4, 5, 6, 7, 8}, {3, 3});
  EXPECT_EQ(ops::gather(big, 0, index_tensor({2, 1}, {1, 2})).to_doubles(), (std::vector<double>{6, 4}));
  EXPECT_EQ(ops::gather(Tensor::from_vector<int64_t>({5, 6, 7}, {3}), 0, index_tensor({2, 2, 0}, {3})).to_doubles(),
            (std::vector<double>{7, 7, 5}));
}

TEST(Gather, GradientsScatterAdd) {
  for (int64_t dim : {0, 1, 2, -1}) {
    Shape xs{4, 5, 6};
    Shape is{3, 4, 5};  // <= x in every dim but the gather dim, which may be larger
    is[size_t(dim < 0 ? 2 : dim)] = 9;
    Tensor idx = random_index(is, xs[size_t(dim < 0 ? 2 : dim)], uint64_t(dim + 10));
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::gather(in[0], dim, idx); },
                           {rand_leaf(xs, 1)});
  }
  // Every element gathered many times.
  Tensor idx = random_index({200, 3}, 2, 7);
  expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::gather(in[0], 0, idx); },
                         {rand_leaf({2, 3}, 2)});
}

TEST(ConcatSplitGather, Errors) {
  Tensor a = Tensor::zeros({2, 3});
  EXPECT_THROW(ops::concat({}, 0), Error);
  EXPECT_THROW(ops::concat({a, Tensor::zeros({2, 3}, DType::f64)}, 0), Error);
  EXPECT_THROW(ops::concat({a, Tensor::zeros({2, 4})}, 0), Error);
  EXPECT_THROW(ops::concat({a, Tensor::zeros({2, 3, 1})}, 0), Error);
  EXPECT_THROW(ops::concat({a, a}, 2), Error);
  EXPECT_THROW(ops::concat({Tensor::scalar(1), Tensor::scalar(2)}, 0), Error);
  EXPECT_THROW(ops::split(a, {1, 1}, 1), Error);
  EXPECT_THROW(ops::split(a, {4, -1}, 1), Error);
  EXPECT_THROW(ops::split(a, {3}, 2), Error);
  EXPECT_THROW(ops::gather(a, 1, index_tensor({0, 3}, {2, 1})), Error);
  EXPECT_THROW(ops::gather(a, 1, index_tensor({0, -1}, {2, 1})), Error);
  EXPECT_THROW(ops::gather(a, 1, Tensor::zeros({2, 1}, DType::i32)), Error);
  EXPECT_THROW(ops::gather(a, 1, index_tensor({0, 1}, {2})), Error);
  EXPECT_THROW(ops::gather(a, 1, index_tensor({0, 1, 0}, {3, 1})), Error);
  EXPECT_THROW(ops::gather(a, 2, index_tensor({0, 1}, {2, 1})), Error);
  try {
    ops::gather(a, 1, index_tensor({0, 7}, {2, 1}));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("7"), std::string::npos);
  }
}
