// ops::embedding: lookup values, scatter-add gradients (repeated ids, padding_idx), errors.
#include "ops/embedding.h"

#include <gtest/gtest.h>

#include "autograd/engine.h"
#include "core/rng.h"
#include "error_of.h"
#include "gradcheck.h"
#include "ops/view.h"

using namespace automodel;
using automodel::testing::error_of;
using automodel::testing::expect_gradients_match;
using automodel::testing::rand_leaf;

namespace {

template <class I>
Tensor ids_tensor(const std::vector<I>& v, const Shape& shape) {
  return Tensor::from_vector<I>(v, shape);
}

}  // namespace

TEST(Embedding, GathersRowsForI64AndI32Ids) {
  Tensor w = rand_leaf({7, 5}, 1, false);
  std::vector<double> wv = w.to_doubles();
  std::vector<int64_t> ids = {3, 0, 6, 3, 1, 2};
  for (bool i32 : {false, true}) {
    Tensor t = i32 ? ids_tensor<int32_t>({3, 0, 6, 3, 1, 2}, {2, 3}) : ids_tensor<int64_t>(ids, {2, 3});
    Tensor out = ops::embedding(t, w);
    ASSERT_EQ(out.shape(), (Shape{2, 3, 5}));
    std::vector<double> o = out.to_doubles();
    for (size_t i = 0; i < ids.size(); ++i)
      for (size_t h = 0; h < 5; ++h) EXPECT_EQ(o[i * 5 + h], wv[size_t(ids[i]) * 5 + h]);
  }
}

TEST(Embedding, Bf16RowsAreCopiedExactly) {
  Generator gen(3);
  Tensor w = randn({9, 33}, gen, DType::bf16);
  Tensor out = ops::embedding(ids_tensor<int64_t>({8, 0, 4}, {3}), w);
  std::vector<double> wv = w.to_doubles(), o = out.to_doubles();
  for (int i = 0; i < 33; ++i) EXPECT_EQ(o[size_t(i)], wv[8 * 33 + size_t(i)]);
  EXPECT_EQ(out.dtype(), DType::bf16);
}

TEST(Embedding, GradcheckWithRepeatedIds) {
  for (int64_t hidden : {1, 7, 33}) {
    Tensor ids = ids_tensor<int64_t>({4, 1, 4, 4, 0, 10, 1, 4, 9, 2, 1, 0, 4, 5, 6}, {3, 5});
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::embedding(ids, in[0]); },
                           {rand_leaf({11, hidden}, 10 + uint64_t(hidden))});
  }
}

TEST(Embedding, GradcheckWithI32Ids) {
  Tensor ids = ids_tensor<int32_t>({2, 2, 0, 5, 5, 5, 1}, {7});
  expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::embedding(ids, in[0]); },
                         {rand_leaf({6, 17}, 4)});
}

TEST(Embedding, PaddingRowGetsNoGradient) {
  Tensor ids = ids_tensor<int64_t>({2, 3, 2, 0, 1, 2}, {2, 3});
  // The forward still reads the padding row (torch semantics); only its gradient is dropped. So
  // check the other rows by finite differences on ids without the padding id...
  Tensor ids_no_pad = ids_tensor<int64_t>({4, 3, 4, 0, 1, 4}, {2, 3});
  expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::embedding(ids_no_pad, in[0], 2); },
                         {rand_leaf({5, 19}, 5)});
  // ...and with it: the gradient equals the one without padding_idx, padding row zeroed.
  Generator gen(11);
  Tensor g = randn({2, 3, 19}, gen, DType::f64);
  Tensor w1 = rand_leaf({5, 19}, 5), w2 = rand_leaf({5, 19}, 5);
  autograd::backward({ops::embedding(ids, w1, 2)}, {g});
  autograd::backward({ops::embedding(ids, w2)}, {g});
  std::vector<double> g1 = w1.grad().to_doubles(), g2 = w2.grad().to_doubles();
  for (size_t i = 0; i < g1.size(); ++i) EXPECT_EQ(g1[i], i / 19 == 2 ? 0.0 : g2[i]) << i;
  // Counts with a ones gradient: id 0 once, 1 once, 2 padding, 3 once, 4 never.
  Tensor w = rand_leaf({5, 3}, 6);
  Tensor out = ops::embedding(ids, w, 2);
  autograd::backward({out}, {Tensor::ones(out.shape(), DType::f64)});
  std::vector<double> expect = {1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0};
  EXPECT_EQ(w.grad().to_doubles(), expect);
}

TEST(Embedding, Bf16GradientSumsRepeatsInFloat) {
  Tensor w = Tensor::zeros({3, 4}, DType::bf16);
  w.set_requires_grad(true);
  std::vector<int64_t> ids(300, 1);
  Tensor out = ops::embedding(ids_tensor<int64_t>(ids, {300}), w);
  // 300 * (1 + 2^-7): summed in bf16 this would stall; summed in float it rounds once at the end.
  autograd::backward({out}, {Tensor::full(out.shape(), 1.0078125, DType::bf16)});
  std::vector<double> g = w.grad().to_doubles();
  EXPECT_EQ(g[4], double(bf16_to_float(float_to_bf16(300 * 1.0078125f))));
  EXPECT_EQ(g[0], 0.0);
}

TEST(Embedding, NonContiguousIdsAndWeight) {
  Tensor ids = ops::transpose(ids_tensor<int64_t>({0, 1, 2, 3, 4, 5}, {2, 3}), 0, 1);
  Tensor ref_ids = ids_tensor<int64_t>({0, 3, 1, 4, 2, 5}, {3, 2});
  Tensor w = rand_leaf({8, 6}, 7, false);
  EXPECT_EQ(ops::embedding(ids, w).to_doubles(), ops::embedding(ref_ids, w).to_doubles());
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) { return ops::embedding(ids, ops::transpose(in[0], 0, 1)); },
      {rand_leaf({6, 8}, 8)});
}

TEST(Embedding, NoGraphWhenWeightIsFrozen) {
  Tensor out = ops::embedding(ids_tensor<int64_t>({1}, {1}), rand_leaf({3, 2}, 9, false));
  EXPECT_FALSE(out.requires_grad());
}

TEST(Embedding, ErrorsNameTheBadIdAndVocab) {
  Tensor w = rand_leaf({10, 4}, 1, false);
  std::string msg = error_of([&] { ops::embedding(ids_tensor<int64_t>({1, 12, 3}, {3}), w); });
  EXPECT_NE(msg.find("12"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vocab size 10"), std::string::npos) << msg;
  msg = error_of([&] { ops::embedding(ids_tensor<int32_t>({-1}, {1}), w); });
  EXPECT_NE(msg.find("id -1"), std::string::npos) << msg;
  EXPECT_THROW(ops::embedding(ids_tensor<int64_t>({10}, {1}), w), Error);
  EXPECT_THROW(ops::embedding(Tensor::zeros({2}), w), Error);                              // float ids
  EXPECT_THROW(ops::embedding(ids_tensor<int64_t>({0}, {1}), rand_leaf({10}, 2)), Error);  // 1-D weight
  EXPECT_THROW(ops::embedding(ids_tensor<int64_t>({0}, {1}), w, 10), Error);               // padding_idx
  EXPECT_THROW(ops::embedding(ids_tensor<int64_t>({0}, {1}), Tensor::zeros({3, 2}, DType::i64)), Error);
  EXPECT_THROW(ops::embedding(Tensor(), w), Error);
}
