// ops::sum / mean / sum_to_shape: values over any set of dims against a double reference,
// accuracy of long fp32 sums, gradients by finite differences, errors.
#include "ops/reduce.h"

#include <gtest/gtest.h>

#include <cmath>

#include "autograd/engine.h"
#include "core/rng.h"
#include "core/threads.h"
#include "gradcheck.h"
#include "ops/view.h"

using namespace automodel;
using automodel::testing::expect_gradients_match;
using automodel::testing::rand_leaf;

namespace {

// Reference sum over the flagged dims (keepdim layout = kept dims in order).
std::vector<double> ref_sum(const std::vector<double>& x, const Shape& shape, const std::vector<bool>& red) {
  Shape kept;
  for (size_t d = 0; d < shape.size(); ++d)
    if (!red[d]) kept.push_back(shape[d]);
  std::vector<double> out(size_t(shape_numel(kept)), 0.0);
  for (int64_t i = 0; i < int64_t(x.size()); ++i) {
    int64_t rem = i, o = 0, stride = 1;
    for (size_t d = shape.size(); d-- > 0;) {
      int64_t idx = rem % shape[d];
      rem /= shape[d];
      if (!red[d]) {
        o += idx * stride;
        stride *= shape[d];
      }
    }
    out[size_t(o)] += x[size_t(i)];
  }
  return out;
}

struct Case {
  Shape shape;
  std::vector<int64_t> dims;
};

const std::vector<Case> kCases = {
    {{3, 4, 5}, {}},
    {{3, 4, 5}, {0}},
    {{3, 4, 5}, {1}},
    {{3, 4, 5}, {-1}},
    {{3, 4, 5}, {0, 2}},
    {{3, 4, 5}, {0, 1}},
    {{3, 4, 5}, {1, 2}},
    {{2, 3, 4, 5}, {0, 2}},
    {{2, 3, 4, 5}, {1, 3}},
    {{7, 33}, {0}},
    {{7, 33}, {1}},
    {{1000}, {0}},
    {{5, 1, 3}, {1}},
    {{1}, {}},
    {{}, {}},
    {{2, 1, 7}, {0, 1}},
};

}  // namespace

TEST(Reduce, SumAndMeanValues) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(shape_str(c.shape));
    Tensor x = rand_leaf(c.shape, 3, false);
    std::vector<bool> red(c.shape.size(), c.dims.empty());
    int64_t count = 1;
    for (int64_t d : c.dims) red[size_t(d < 0 ? d + int64_t(c.shape.size()) : d)] = true;
    for (size_t d = 0; d < c.shape.size(); ++d)
      if (red[d]) count *= c.shape[d];
    std::vector<double> want = ref_sum(x.to_doubles(), c.shape, red);
    for (bool keepdim : {false, true}) {
      Tensor s = ops::sum(x, c.dims, keepdim), m = ops::mean(x, c.dims, keepdim);
      Shape expect;
      for (size_t d = 0; d < c.shape.size(); ++d)
        if (!red[d])
          expect.push_back(c.shape[d]);
        else if (keepdim)
          expect.push_back(1);
      EXPECT_EQ(s.shape(), expect);
      std::vector<double> sv = s.to_doubles(), mv = m.to_doubles();
      ASSERT_EQ(sv.size(), want.size());
      for (size_t i = 0; i < want.size(); ++i) {
        EXPECT_NEAR(sv[i], want[i], 1e-12);
        EXPECT_NEAR(mv[i], want[i] / double(count), 1e-12);
      }
    }
  }
}

TEST(Reduce, Gradients) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(shape_str(c.shape));
    for (bool keepdim : {false, true}) {
      expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::sum(in[0], c.dims, keepdim); },
                             {rand_leaf(c.shape, 1)});
      expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::mean(in[0], c.dims, keepdim); },
                             {rand_leaf(c.shape, 2)});
    }
  }
  // A non-contiguous input.
  expect_gradients_match([](const std::vector<Tensor>& in) { return ops::sum(ops::transpose(in[0], 0, 2), {1}); },
                         {rand_leaf({3, 4, 5}, 3)});
}

TEST(Reduce, SumToShape) {
  Tensor x = rand_leaf({3, 4, 5}, 1, false);
  struct T {
    Shape to;
    std::vector<bool> red;
  };
  for (const T& t : std::vector<T>{{{4, 1}, {true, false, true}},
                                   {{3, 1, 5}, {false, true, false}},
                                   {{5}, {true, true, false}},
                                   {{1, 1, 1}, {true, true, true}},
                                   {{}, {true, true, true}},
                                   {{1, 4, 1}, {true, false, true}}}) {
    Tensor s = ops::sum_to_shape(x, t.to);
    EXPECT_EQ(s.shape(), t.to);
    std::vector<double> got = s.to_doubles(), want = ref_sum(x.to_doubles(), x.shape(), t.red);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12);
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::sum_to_shape(in[0], t.to); },
                           {rand_leaf({3, 4, 5}, 2)});
  }
  EXPECT_TRUE(ops::sum_to_shape(x, {3, 4, 5}).same(x));
  EXPECT_THROW(ops::sum_to_shape(x, {2, 5}), Error);
  EXPECT_THROW(ops::sum_to_shape(x, {1, 3, 4, 5}), Error);
  EXPECT_THROW(ops::sum_to_shape(x, {4, 2}), Error);
}

TEST(Reduce, LongFp32SumsStayAccurate) {
  // 2^24 + 2 copies of 1 (representable in fp32): a naive fp32 running sum stalls at 2^24.
  const int64_t n = (1 << 24) + 2;
  Tensor ones = Tensor::ones({n});
  EXPECT_EQ(ops::sum(ones).item(), double(n));
  Generator gen(11);
  Tensor x = rand_uniform({3, 1 << 20}, 0, 1, gen);  // positive: no cancellation to hide errors
  std::vector<double> xv = x.to_doubles();
  for (std::vector<int64_t> dims : {std::vector<int64_t>{1}, std::vector<int64_t>{}}) {
    std::vector<double> got = ops::sum(x, dims).to_doubles();
    for (size_t r = 0; r < got.size(); ++r) {
      double want = 0;
      size_t len = xv.size() / got.size();
      for (size_t i = 0; i < len; ++i) want += xv[r * len + i];
      EXPECT_NEAR(got[r], want, 1e-6 * want);
    }
  }
  // Column sums over many rows (the bias-gradient shape).
  Tensor y = rand_uniform({200000, 3}, 0, 1, gen);
  std::vector<double> yv = y.to_doubles(), cs = ops::sum(y, {0}).to_doubles();
  for (size_t j = 0; j < 3; ++j) {
    double want = 0;
    for (size_t i = 0; i < 200000; ++i) want += yv[i * 3 + j];
    EXPECT_NEAR(cs[j], want, 1e-6 * want);
  }
  Tensor b = Tensor::ones({4096, 64}, DType::bf16);
  std::vector<double> bs = ops::sum(b, {0}).to_doubles();
  for (double v : bs) EXPECT_EQ(v, 4096.0);  // accumulated in fp32 or better, not in bf16
  EXPECT_EQ(ops::mean(Tensor::full({1000, 7}, 0.1), {0}).dtype(), DType::f32);
}

TEST(Reduce, SameResultForAnyThreadCount) {
  Generator gen(4);
  Tensor x = randn({64, 5000}, gen);
  int before = num_threads();
  set_num_threads(1);
  std::vector<double> a = ops::sum(x, {0}).to_doubles(), c = ops::sum(x).to_doubles();
  set_num_threads(2);
  std::vector<double> b = ops::sum(x, {0}).to_doubles(), d = ops::sum(x).to_doubles();
  set_num_threads(before);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * (1 + std::abs(a[i])));
  EXPECT_EQ(c, d);
}

TEST(Reduce, EmptyAndErrors) {
  Tensor e = Tensor::zeros({0, 3});
  EXPECT_EQ(ops::sum(e, {0}).to_doubles(), std::vector<double>(3, 0.0));
  EXPECT_TRUE(std::isnan(ops::mean(e, {0}).to_doubles()[0]));
  Tensor x = Tensor::zeros({2, 3});
  EXPECT_THROW(ops::sum(x, {2}), Error);
  EXPECT_THROW(ops::sum(x, {-3}), Error);
  EXPECT_THROW(ops::sum(x, {1, -1}), Error);
  EXPECT_THROW(ops::mean(Tensor::zeros({2}, DType::i64)), Error);
  EXPECT_THROW(ops::sum(Tensor()), Error);
}
