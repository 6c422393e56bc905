// The mixture-of-experts ops (ops/topk.h, ops/moe_permute.h, ops/grouped_gemm.h): gradients against finite
// differences, the composed expert layer against a per-token loop, the routing edge cases (an expert that receives no
// token, all tokens to one expert, k = number of experts), bf16, and the errors bad inputs give.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/engine.h"
#include "error_of.h"
#include "gradcheck.h"
#include "ops/cast.h"
#include "ops/grouped_gemm.h"
#include "ops/moe_permute.h"
#include "ops/reduce.h"
#include "ops/topk.h"
#include "ops/view.h"

namespace automodel {
namespace {

using testing::error_of;
using testing::expect_gradients_match;
using testing::rand_leaf;

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

Tensor ids(const std::vector<int64_t>& v, int64_t rows, int64_t cols) { return Tensor::from_vector(v, {rows, cols}); }

// out[t] = sum_j weights[t, j] * (x[t] @ w[experts[t, j]]^T): the experts' linear layers token by token.
std::vector<double> per_token_reference(const Tensor& x, const Tensor& w, const Tensor& experts,
                                        const Tensor& weights) {
  const int64_t tokens = x.size(0), in = x.size(1), out = w.size(1), k = experts.size(1);
  const std::vector<double> xv = x.to_doubles(), wv = w.to_doubles(), ev = experts.to_doubles(),
                            gv = weights.to_doubles();
  std::vector<double> y(size_t(tokens * out), 0.0);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = int64_t(ev[size_t(t * k + j)]);
      for (int64_t o = 0; o < out; ++o) {
        double s = 0;
        for (int64_t i = 0; i < in; ++i) s += xv[size_t(t * in + i)] * wv[size_t((e * out + o) * in + i)];
        y[size_t(t * out + o)] += gv[size_t(t * k + j)] * s;
      }
    }
  return y;
}

Tensor expert_layer(const Tensor& x, const Tensor& w, const Tensor& experts, const Tensor& weights) {
  ops::MoeRouting r = ops::moe_routing(experts, w.size(0));
  return ops::moe_unpermute(ops::grouped_gemm(ops::moe_permute(x, r), w, r.counts), weights, r);
}

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol * std::max(1.0, std::abs(want[i]))) << i;
}

TEST(TopK, ValuesAndIndicesAreTheLargestInOrderAndTiesKeepColumnOrder) {
  Tensor x = Tensor::from_values({0.25, 0.75, 0.5, 0.75, -1, 3, 2, 1}, {2, 4});
  ops::TopK top = ops::topk(x, 2);
  EXPECT_EQ(top.values.to_doubles(), (std::vector<double>{0.75, 0.75, 3, 2}));
  EXPECT_EQ(top.indices.to_doubles(), (std::vector<double>{1, 3, 1, 2}));
}

TEST(TopK, GradientGoesToTheChosenEntries) {
  expect_gradients_match([](const std::vector<Tensor>& in) { return ops::topk(in[0], 3).values; },
                         {rand_leaf({4, 6}, 1)});
}

TEST(TopK, KOutsideOneToTheLastDimensionIsAnError) {
  Tensor x = Tensor::zeros({2, 4});
  EXPECT_TRUE(has(error_of([&] { ops::topk(x, 5); }), "topk: k = 5 is outside [1, 4]"));
  EXPECT_TRUE(has(error_of([&] { ops::topk(x, 0); }), "topk: k = 0 is outside [1, 4]"));
}

TEST(MoeRouting, CountsAndPositionsFollowExpertOrderAndAnExpertWithoutTokensGetsNone) {
  ops::MoeRouting r = ops::moe_routing(ids({2, 0, 0, 2, 3, 0}, 3, 2), 4);
  EXPECT_EQ(r.counts.to_doubles(), (std::vector<double>{3, 0, 2, 1}));
  EXPECT_EQ(r.positions.to_doubles(), (std::vector<double>{3, 0, 1, 4, 5, 2}));
}

TEST(MoeRouting, AnExpertOutsideTheRangeIsAnError) {
  const std::string err = error_of([] { ops::moe_routing(ids({0, 4}, 1, 2), 4); });
  EXPECT_TRUE(has(err, "moe_routing: expert 4 (at flat position 1) is outside [0, 4)")) << err;
}

// Routings: experts 1 and 3 of 4 get no token; all tokens to expert 2 (k = 1); k = number of experts.
struct Routing {
  const char* what;
  std::vector<int64_t> experts;
  int64_t tokens, k, num_experts;
};
const std::vector<Routing> kRoutings{
    {"two experts get no token", {0, 2, 2, 0, 0, 2, 2, 0, 0, 2}, 5, 2, 4},
    {"all tokens to one expert", {2, 2, 2, 2, 2}, 5, 1, 4},
    {"k = number of experts", {0, 1, 2, 2, 0, 1, 1, 2, 0, 0, 1, 2, 2, 1, 0}, 5, 3, 3},
};

TEST(MoeExpertLayer, MatchesAPerTokenLoopForEveryRouting) {
  for (const Routing& r : kRoutings) {
    SCOPED_TRACE(r.what);
    Tensor x = rand_leaf({r.tokens, 6}, 2, false), w = rand_leaf({r.num_experts, 5, 6}, 3, false),
           weights = rand_leaf({r.tokens, r.k}, 4, false), experts = ids(r.experts, r.tokens, r.k);
    expect_near_all(expert_layer(x, w, experts, weights).to_doubles(), per_token_reference(x, w, experts, weights),
                    1e-12);
  }
}

TEST(MoeExpertLayer, GradientsOfInputsExpertWeightsAndRoutingWeightsMatchFiniteDifferences) {
  for (const Routing& r : kRoutings) {
    SCOPED_TRACE(r.what);
    Tensor experts = ids(r.experts, r.tokens, r.k);
    expect_gradients_match(
        [&](const std::vector<Tensor>& in) { return expert_layer(in[0], in[1], experts, in[2]); },
        {rand_leaf({r.tokens, 6}, 5), rand_leaf({r.num_experts, 4, 6}, 6), rand_leaf({r.tokens, r.k}, 7)});
  }
}

TEST(MoeExpertLayer, AnExpertWithoutTokensGetsAZeroWeightGradient) {
  Tensor x = rand_leaf({5, 6}, 8, false), w = rand_leaf({4, 5, 6}, 9), weights = rand_leaf({5, 2}, 10, false);
  autograd::backward(ops::sum(expert_layer(x, w, ids(kRoutings[0].experts, 5, 2), weights)));
  std::vector<double> g = w.grad().to_doubles();
  for (int64_t e : {1, 3})
    for (int64_t i = 0; i < 30; ++i) EXPECT_EQ(g[size_t(e * 30 + i)], 0.0);
  double used = 0;
  for (int64_t i = 0; i < 30; ++i) used += std::abs(g[size_t(i)]);
  EXPECT_GT(used, 0.0);
}

TEST(MoeExpertLayer, Bf16MatchesTheF64ReferenceWithinBf16Rounding) {
  const Routing& r = kRoutings[0];
  Tensor x = rand_leaf({r.tokens, 16}, 11, false), w = rand_leaf({r.num_experts, 8, 16}, 12, false),
         weights = rand_leaf({r.tokens, r.k}, 13, false), experts = ids(r.experts, r.tokens, r.k);
  auto bf = [](const Tensor& t) { return ops::to_dtype(t, DType::bf16); };
  Tensor x16 = bf(x), w16 = bf(w), g16 = bf(weights);
  std::vector<double> want = per_token_reference(ops::to_dtype(x16, DType::f64), ops::to_dtype(w16, DType::f64),
                                                 experts, ops::to_dtype(g16, DType::f64));
  std::vector<double> got = expert_layer(x16, w16, experts, g16).to_doubles();
  double scale = 0;
  for (double v : want) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 2e-2 * scale) << i;
}

TEST(GroupedGemm, CountsThatDoNotAddUpToTheRowsAreAnError) {
  Tensor x = Tensor::zeros({5, 3}), w = Tensor::zeros({2, 4, 3});
  EXPECT_TRUE(has(error_of([&] {
                    ops::grouped_gemm(x, w, Tensor::from_vector<int64_t>({2, 2}, {2}));
                  }),
                  "grouped_gemm: the group counts sum to 4 but x has 5 rows"));
  EXPECT_TRUE(has(error_of([&] {
                    ops::grouped_gemm(x, w, Tensor::from_vector<int64_t>({6, -1}, {2}));
                  }),
                  "grouped_gemm: a group count is negative"));
  EXPECT_TRUE(has(error_of([&] {
                    ops::grouped_gemm(x, Tensor::zeros({2, 4, 2}), Tensor::from_vector<int64_t>({5, 0}, {2}));
                  }),
                  "grouped_gemm: x must be [rows, in] and w [groups, out, in]"));
}

// GPT-OSS's layout: each group's matrix stored [in, out]. The same products as the [out, in] copy, and gradients
// (in the stored layout) that match finite differences.
TEST(GroupedGemm, TransposedWeightsMatchTheirCopyAndFiniteDifferences) {
  const Tensor counts = Tensor::from_vector<int64_t>({3, 0, 4}, {3});
  Tensor x = rand_leaf({7, 5}, 31), w = rand_leaf({3, 5, 6}, 32);  // [groups, in, out]
  {
    NoGradGuard no_grad;
    const Tensor copy = ops::contiguous(ops::transpose(w, 1, 2));
    expect_near_all(ops::grouped_gemm(x, w, counts, true).to_doubles(), ops::grouped_gemm(x, copy, counts).to_doubles(),
                    1e-12);
  }
  expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::grouped_gemm(in[0], in[1], counts, true); },
                         {x, w});
  const std::string err = error_of([&] { ops::grouped_gemm(x, Tensor::zeros({3, 6, 5}), counts, true); });
  EXPECT_TRUE(has(err, "w [groups, in, out] (transposed)")) << err;
}

TEST(MoeUnpermute, WeightsOfTheWrongShapeAreAnError) {
  ops::MoeRouting r = ops::moe_routing(ids({0, 1, 1, 0}, 2, 2), 2);
  const std::string err = error_of([&] { ops::moe_unpermute(Tensor::zeros({4, 3}), Tensor::zeros({2, 3}), r); });
  EXPECT_TRUE(has(err, "moe_unpermute: weights must be [2, 2]")) << err;
}

}  // namespace
}  // namespace automodel
