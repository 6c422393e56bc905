// components/loss: MaskedCrossEntropy, ChunkedCrossEntropy and FusedLinearCrossEntropy — f64
// finite-difference gradients, agreement of the three variants, num_label_tokens normalisation,
// all-ignored labels, errors, and FusedLinearCrossEntropy's peak memory against the full logits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "autograd/engine.h"
#include "components/loss/cross_entropy.h"
#include "core/allocator.h"
#include "core/rng.h"
#include "error_of.h"
#include "gradcheck.h"
#include "ops/cast.h"
#include "ops/matmul.h"

using namespace automodel;
using automodel::testing::error_of;
using automodel::testing::expect_gradients_match;
using automodel::testing::rand_leaf;

namespace {

// Labels in [0, vocab) with every third position ignored (-100).
Tensor make_labels(const Shape& shape, int64_t vocab, uint64_t seed) {
  std::vector<int64_t> v(static_cast<size_t>(shape_numel(shape)));
  uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (size_t i = 0; i < v.size(); ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    v[i] = i % 3 == 1 ? -100 : int64_t((s >> 33) % uint64_t(vocab));
  }
  return Tensor::from_vector<int64_t>(v, shape);
}

double rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double err = 0, ref = 1e-30;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    err = std::max(err, std::abs(a[i] - b[i]));
    ref = std::max(ref, std::abs(b[i]));
  }
  return err / ref;
}

}  // namespace

TEST(LossMaskedCE, GradcheckF64) {
  for (auto shape : {Shape{2, 5, 17}, Shape{7, 3}}) {
    const int64_t V = shape.back();
    Tensor labels = make_labels(Shape(shape.begin(), shape.end() - 1), V, 1);
    loss::MaskedCrossEntropy ce;
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ce(in[0], labels); }, {rand_leaf(shape, 2)});
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ce(in[0], labels, 11); }, {rand_leaf(shape, 3)});
  }
}

TEST(LossChunkedCE, GradcheckF64) {
  for (int64_t chunk : {1, 3, 32}) {
    Tensor labels = make_labels({2, 7}, 19, 4);
    loss::ChunkedCrossEntropy ce(chunk);
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ce(in[0], labels); },
                           {rand_leaf({2, 7, 19}, 5)});
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ce(in[0], labels, 23); },
                           {rand_leaf({2, 7, 19}, 6)});
  }
}

TEST(LossFusedLinearCE, GradcheckF64HiddenAndWeight) {
  for (int64_t chunk : {0, 1, 3, 5}) {
    Tensor labels = make_labels({3, 5}, 13, 7);
    loss::FusedLinearCrossEntropy ce(chunk);
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ce(in[0], in[1], labels); },
                           {rand_leaf({3, 5, 6}, 8), rand_leaf({13, 6}, 9)});
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ce(in[0], in[1], labels, 17); },
                           {rand_leaf({3, 5, 6}, 10), rand_leaf({13, 6}, 11)});
  }
}

TEST(LossFusedLinearCE, GradcheckF64Softcap) {
  for (int64_t chunk : {2, 0}) {
    Tensor labels = make_labels({11}, 13, 17);
    loss::FusedLinearCrossEntropy ce(chunk, -100, 1.5);
    expect_gradients_match([&](const std::vector<Tensor>& in) { return ce(in[0], in[1], labels); },
                           {rand_leaf({11, 6}, 18), rand_leaf({13, 6}, 19)});
  }
}

TEST(LossFusedLinearCE, FrozenWeightGetsNoGradient) {
  Tensor labels = make_labels({9}, 13, 12);
  loss::FusedLinearCrossEntropy ce(4);
  Tensor w = rand_leaf({13, 6}, 14, false);
  expect_gradients_match([&](const std::vector<Tensor>& in) { return ce(in[0], w, labels); }, {rand_leaf({9, 6}, 13)});
  Tensor h = rand_leaf({9, 6}, 15, false);
  Tensor wg = rand_leaf({13, 6}, 16);
  expect_gradients_match([&](const std::vector<Tensor>& in) { return ce(h, in[0], labels); }, {wg});
  EXPECT_FALSE(w.grad().defined());
}

// The three variants on the same f32 inputs: logits = hidden @ weight^T.
TEST(LossVariants, AgreeOnValuesAndGradientsF32) {
  const int64_t B = 3, T = 37, H = 24, V = 101;
  Generator gen(21);
  Tensor labels = make_labels({B, T}, V, 22);
  for (std::optional<int64_t> num : {std::optional<int64_t>(), std::optional<int64_t>(200)}) {
    std::vector<double> loss_values;
    std::vector<std::vector<double>> dh, dw;
    for (int variant = 0; variant < 3; ++variant) {
      Generator g2(23);
      Tensor h = randn({B, T, H}, g2, DType::f32);
      Tensor w = randn({V, H}, g2, DType::f32);
      h.set_requires_grad(true);
      w.set_requires_grad(true);
      Tensor loss;
      if (variant == 0) loss = loss::MaskedCrossEntropy()(ops::linear(h, w), labels, num);
      if (variant == 1) loss = loss::ChunkedCrossEntropy(7)(ops::linear(h, w), labels, num);
      if (variant == 2) loss = loss::FusedLinearCrossEntropy(10)(h, w, labels, num);
      ASSERT_EQ(loss.dtype(), DType::f32);
      ASSERT_EQ(loss.dim(), 0);
      autograd::backward(loss);
      loss_values.push_back(loss.item());
      dh.push_back(h.grad().to_doubles());
      dw.push_back(w.grad().to_doubles());
    }
    for (int variant = 1; variant < 3; ++variant) {
      EXPECT_LE(std::abs(loss_values[size_t(variant)] - loss_values[0]) / std::abs(loss_values[0]), 1e-6) << variant;
      EXPECT_LE(rel_diff(dh[size_t(variant)], dh[0]), 1e-5) << variant;
      EXPECT_LE(rel_diff(dw[size_t(variant)], dw[0]), 1e-5) << variant;
    }
  }
}

// sum / num_label_tokens: with k label tokens, loss(num) * num == loss() * k for every variant.
TEST(LossVariants, NumLabelTokensNormalisation) {
  const int64_t N = 20, H = 8, V = 31;
  Tensor labels = make_labels({N}, V, 31);
  const int64_t k = loss::count_label_tokens(labels);
  EXPECT_EQ(k, 13);  // every third position (1, 4, ..., 19) ignored: 7 of 20
  Tensor h = rand_leaf({N, H}, 32, false), w = rand_leaf({V, H}, 33, false);
  Tensor logits = ops::linear(h, w);
  const double mean = loss::MaskedCrossEntropy()(logits, labels).item();
  for (int64_t num : {1, 13, 64, 1000}) {
    EXPECT_NEAR(loss::MaskedCrossEntropy()(logits, labels, num).item() * double(num), mean * double(k), 1e-9 * k);
    EXPECT_NEAR(loss::ChunkedCrossEntropy(6)(logits, labels, num).item() * double(num), mean * double(k), 1e-9 * k);
    EXPECT_NEAR(loss::FusedLinearCrossEntropy(6)(h, w, labels, num).item() * double(num), mean * double(k), 1e-9 * k);
  }
  // Gradients scale the same way: d(loss(num))/dlogits = d(sum)/dlogits / num.
  Tensor x1 = rand_leaf({N, V}, 34), x2 = rand_leaf({N, V}, 34);
  autograd::backward(loss::ChunkedCrossEntropy(4)(x1, labels, 50));
  autograd::backward(loss::MaskedCrossEntropy()(x2, labels));
  std::vector<double> g1 = x1.grad().to_doubles(), g2 = x2.grad().to_doubles();
  for (size_t i = 0; i < g1.size(); ++i) EXPECT_NEAR(g1[i] * 50, g2[i] * double(k), 1e-12);
}

TEST(LossVariants, AllIgnoredGivesZeroLossAndZeroGradients) {
  const int64_t N = 6, H = 5, V = 9;
  Tensor labels = Tensor::from_vector<int64_t>(std::vector<int64_t>(size_t(N), -100), {N});
  EXPECT_EQ(loss::count_label_tokens(labels), 0);
  for (std::optional<int64_t> num : {std::optional<int64_t>(), std::optional<int64_t>(0), std::optional<int64_t>(8)}) {
    for (int variant = 0; variant < 3; ++variant) {
      Tensor h = rand_leaf({N, H}, 41), w = rand_leaf({V, H}, 42);
      Tensor loss = variant == 0   ? loss::MaskedCrossEntropy()(ops::linear(h, w), labels, num)
                    : variant == 1 ? loss::ChunkedCrossEntropy(4)(ops::linear(h, w), labels, num)
                                   : loss::FusedLinearCrossEntropy(4)(h, w, labels, num);
      EXPECT_EQ(loss.item(), 0.0) << variant;
      autograd::backward(loss);
      for (const Tensor& t : {h, w}) {
        ASSERT_TRUE(t.grad().defined());
        for (double g : t.grad().to_doubles()) EXPECT_EQ(g, 0.0) << variant;
      }
    }
  }
}

TEST(LossVariants, Bf16ComputesInFp32) {
  const int64_t N = 40, H = 16, V = 67;
  Tensor labels = make_labels({N}, V, 51);
  Tensor h32 = rand_leaf({N, H}, 52, false), w32 = rand_leaf({V, H}, 53, false);
  Tensor h = ops::to_dtype(h32, DType::bf16), w = ops::to_dtype(w32, DType::bf16);
  // Reference: the same bf16 values, in f64.
  Tensor ref_logits = ops::linear(ops::to_dtype(h, DType::f64), ops::to_dtype(w, DType::f64));
  const double ref = loss::MaskedCrossEntropy()(ref_logits, labels).item();
  Tensor logits16 = ops::to_dtype(ref_logits, DType::bf16);
  Tensor a = loss::MaskedCrossEntropy()(logits16, labels);
  Tensor b = loss::ChunkedCrossEntropy(8)(logits16, labels);
  Tensor c = loss::FusedLinearCrossEntropy(8)(h, w, labels);
  for (const Tensor& t : {a, b, c}) {
    EXPECT_EQ(t.dtype(), DType::f32);
    EXPECT_LE(std::abs(t.item() - ref) / ref, 1e-2);
  }
  EXPECT_LE(std::abs(a.item() - b.item()) / std::abs(a.item()), 1e-6);
}

TEST(LossVariants, Errors) {
  Tensor logits = rand_leaf({4, 5}, 61, false);
  Tensor bad_label = Tensor::from_vector<int64_t>({0, 5, 1, -100}, {4});
  EXPECT_NE(error_of([&] { loss::MaskedCrossEntropy()(logits, bad_label); }).find("out of range"), std::string::npos);
  EXPECT_NE(error_of([&] { loss::ChunkedCrossEntropy()(logits, bad_label); }).find("out of range"), std::string::npos);
  Tensor labels3 = Tensor::from_vector<int64_t>({0, 1, 2}, {3});
  EXPECT_NE(error_of([&] { loss::MaskedCrossEntropy()(logits, labels3); }).find("MaskedCrossEntropy"),
            std::string::npos);
  EXPECT_NE(error_of([&] { loss::ChunkedCrossEntropy()(logits, labels3); }).find("ChunkedCrossEntropy"),
            std::string::npos);
  Tensor f_labels = Tensor::zeros({4}, DType::f32);
  EXPECT_NE(error_of([&] { loss::ChunkedCrossEntropy()(logits, f_labels); }).find("i64"), std::string::npos);
  EXPECT_NE(error_of([] { loss::ChunkedCrossEntropy(0); }).find("chunk_len"), std::string::npos);
  EXPECT_NE(error_of([] { loss::FusedLinearCrossEntropy(-1); }).find("chunk_len"), std::string::npos);
  EXPECT_NE(error_of([] { loss::FusedLinearCrossEntropy(0, -100, -2.0); }).find("logit_softcap"), std::string::npos);
  EXPECT_NE(error_of([&] {
              loss::MaskedCrossEntropy()(logits, Tensor::from_vector<int64_t>({0, 1, 2, 3}, {4}), -1);
            }).find("num_label_tokens"),
            std::string::npos);
  Tensor h = rand_leaf({4, 3}, 62, false);
  Tensor labels4 = Tensor::from_vector<int64_t>({0, 1, 2, 3}, {4});
  EXPECT_NE(error_of([&] {
              loss::FusedLinearCrossEntropy()(h, rand_leaf({5, 2}, 63, false), labels4);
            }).find("FusedLinearCrossEntropy"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              loss::FusedLinearCrossEntropy()(h, Tensor::zeros({5, 3}, DType::f32), labels4);
            }).find("dtype"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              loss::FusedLinearCrossEntropy()(h, rand_leaf({5, 3, 1}, 64, false), labels4);
            }).find("weight"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              loss::FusedLinearCrossEntropy()(h, rand_leaf({3, 3}, 65, false), labels4);
            }).find("out of range"),
            std::string::npos);
}

// Forward + backward of FusedLinearCrossEntropy never holds anything near the [N, V] logits.
TEST(LossFusedLinearCE, PeakMemoryBelowQuarterOfFullLogits) {
  const int64_t N = 2048, H = 64, V = 32000;
  Generator gen(71);
  Tensor h = randn({N, H}, gen, DType::f32);
  Tensor w = randn({V, H}, gen, DType::f32);
  h.set_requires_grad(true);
  w.set_requires_grad(true);
  Tensor labels = make_labels({N}, V, 72);
  auto& alloc = CachingAllocator::cpu();
  const size_t before = alloc.stats().current_bytes;
  alloc.reset_peak();
  {
    Tensor loss = loss::FusedLinearCrossEntropy()(h, w, labels);
    autograd::backward(loss);
    EXPECT_TRUE(std::isfinite(loss.item()));
  }
  const size_t peak = alloc.stats().peak_bytes - before;
  const size_t full = size_t(N) * size_t(V) * sizeof(float);
  std::printf(
      "FusedLinearCrossEntropy N=%lld V=%lld H=%lld: peak growth %.1f MB (chunk %lld rows), full logits %.1f MB\n",
      (long long)N, (long long)V, (long long)H, double(peak) / 1e6,
      (long long)loss::FusedLinearCrossEntropy().chunk_rows(N, V, DType::f32), double(full) / 1e6);
  EXPECT_LT(peak, full / 4);
  ASSERT_TRUE(h.grad().defined());
  ASSERT_TRUE(w.grad().defined());
}

// ChunkedCrossEntropy on bf16 logits never makes the fp32 copy MaskedCrossEntropy's upcast does: its
// forward allocates only one chunk's scratch; forward + backward holds only bf16 [N, V] buffers (the
// gradient and the leaf's private .grad copy), far below the upcasting MaskedCrossEntropy.
TEST(LossChunkedCE, Bf16PeakMemoryBelowFp32Upcast) {
  const int64_t N = 512, V = 8000;
  Generator gen(81);
  Tensor labels = make_labels({N}, V, 82);
  auto& alloc = CachingAllocator::cpu();
  size_t peaks[2][2] = {};  // [chunked, masked][forward, forward + backward]
  for (int variant = 0; variant < 2; ++variant) {
    Tensor logits = ops::to_dtype(randn({N, V}, gen, DType::f32), DType::bf16);
    logits.set_requires_grad(true);
    const size_t before = alloc.stats().current_bytes;
    alloc.reset_peak();
    {
      Tensor loss =
          variant == 0 ? loss::ChunkedCrossEntropy(32)(logits, labels) : loss::MaskedCrossEntropy()(logits, labels);
      peaks[variant][0] = alloc.stats().peak_bytes - before;
      autograd::backward(loss);
    }
    peaks[variant][1] = alloc.stats().peak_bytes - before;
    ASSERT_TRUE(logits.grad().defined());
  }
  const size_t bf16_bytes = CachingAllocator::bucket_size(size_t(N) * size_t(V) * 2);
  std::printf(
      "bf16 N=%lld V=%lld peak growth: ChunkedCrossEntropy forward %.2f MB, +backward %.1f MB; "
      "MaskedCrossEntropy (fp32 upcast) forward %.1f MB, +backward %.1f MB\n",
      (long long)N, (long long)V, double(peaks[0][0]) / 1e6, double(peaks[0][1]) / 1e6, double(peaks[1][0]) / 1e6,
      double(peaks[1][1]) / 1e6);
  EXPECT_LT(peaks[0][0], size_t(1) << 20);
  EXPECT_LE(peaks[0][1], 2 * bf16_bytes + (size_t(1) << 20));
  EXPECT_LT(peaks[0][1], peaks[1][1]);
}
