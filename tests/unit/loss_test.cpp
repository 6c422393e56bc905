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
#include "ops/activation.h"
#include "ops/binary.h"
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

// Chunk boundaries in f64 (the scalar kernel path): rows not a multiple of the chunk, one row, a chunk
// from the byte budget, label rows separated by ignored ones (gathered chunks) and all-ignored rows.
TEST(LossFusedLinearCE, GradcheckF64ChunkBoundaries) {
  const int64_t H = 5, V = 19;
  std::vector<int64_t> mixed = {3, -100, -100, 7, 0, -100, 18, 2, -100, 11, 5};
  std::vector<int64_t> tail_ignored = {4, 9, -100, -100};
  for (const auto& lab : {mixed, tail_ignored, std::vector<int64_t>{6}, std::vector<int64_t>(4, -100)}) {
    const int64_t N = int64_t(lab.size());
    Tensor labels = Tensor::from_vector<int64_t>(lab, {N});
    // chunk 0 with a budget of 3 rows of f64 logits: the chunk is derived, and the rows split 3 + 3 + ...
    for (const loss::FusedLinearCrossEntropy& ce :
         {loss::FusedLinearCrossEntropy(1), loss::FusedLinearCrossEntropy(2), loss::FusedLinearCrossEntropy(4),
          loss::FusedLinearCrossEntropy(0, -100, 0.0, 3 * V * 8), loss::FusedLinearCrossEntropy(3, -100, 2.5)}) {
      expect_gradients_match([&](const std::vector<Tensor>& in) { return ce(in[0], in[1], labels, 9); },
                             {rand_leaf({N, H}, uint64_t(80 + N)), rand_leaf({V, H}, uint64_t(90 + N))});
    }
  }
  EXPECT_EQ(loss::FusedLinearCrossEntropy(0, -100, 0.0, 3 * V * 8).chunk_rows(7, V, DType::f64), 3);  // 3 + 2 + 2
  EXPECT_EQ(loss::FusedLinearCrossEntropy(0, -100, 0.0, 3 * V * 8).chunk_rows(6, V, DType::f64), 3);
  EXPECT_EQ(loss::FusedLinearCrossEntropy(0, -100, 0.0, 3 * V * 4).chunk_rows(7, V, DType::bf16), 3);
}

namespace {

// Loss, d(hidden) and d(weight) of the fused loss on f32 / bf16 inputs against the same inputs in f64
// through explicit logits (MaskedCrossEntropy, or soft-capped logits), as max-abs-error / max-abs-reference.
struct FusedErrors {
  double loss = 0, dh = 0, dw = 0;
};
FusedErrors fused_vs_f64(int64_t N, int64_t H, int64_t V, DType dt, const loss::FusedLinearCrossEntropy& ce, double cap,
                         uint64_t seed) {
  Generator gen(seed);
  Tensor labels = make_labels({N}, V, seed + 1);
  Tensor h = ops::to_dtype(randn({N, H}, gen, DType::f32), dt).set_requires_grad(true);
  Tensor w = ops::to_dtype(ops::scale(randn({V, H}, gen, DType::f32), 2.0 / std::sqrt(double(H))), dt);
  w.set_requires_grad(true);
  Tensor loss = ce(h, w, labels, 100);
  autograd::backward(loss);
  Tensor h64 = ops::to_dtype(h.detach(), DType::f64).set_requires_grad(true);
  Tensor w64 = ops::to_dtype(w.detach(), DType::f64).set_requires_grad(true);
  Tensor logits = ops::linear(h64, w64);
  if (cap > 0) logits = ops::softcap(logits, cap);
  Tensor ref = loss::MaskedCrossEntropy()(logits, labels, 100);
  autograd::backward(ref);
  FusedErrors e;
  e.loss = std::abs(loss.item() - ref.item()) / std::abs(ref.item());
  e.dh = rel_diff(h.grad().to_doubles(), h64.grad().to_doubles());
  e.dw = rel_diff(w.grad().to_doubles(), w64.grad().to_doubles());
  return e;
}

}  // namespace

// The vectorised f32 path: vocabularies that are not a multiple of the 16-lane vectors and cross the
// 2048-element summation blocks, several chunks, soft-capping; within the oracle's f32 tolerances.
TEST(LossFusedLinearCE, F32VectorPathMatchesF64) {
  for (int64_t V : {37, 2053, 4099})
    for (double cap : {0.0, 3.0}) {
      const FusedErrors e = fused_vs_f64(45, 24, V, DType::f32, loss::FusedLinearCrossEntropy(16, -100, cap), cap, 5);
      EXPECT_LE(e.loss, 1e-5) << "V=" << V << " cap=" << cap;
      EXPECT_LE(e.dh, 1e-4) << "V=" << V << " cap=" << cap;
      EXPECT_LE(e.dw, 1e-4) << "V=" << V << " cap=" << cap;
    }
}

// bf16: several chunks, so later chunks add their d(weight) through the fp32 tiles (H = 1024 makes a
// tile 2048 vocabulary rows: V = 5000 takes three, the last partial), and d(hidden) adds up the same
// tiles in fp32; fp32 softmax statistics.
TEST(LossFusedLinearCE, Bf16ChunksAndWeightTilesMatchF64) {
  for (double cap : {0.0, 5.0}) {
    const FusedErrors e =
        fused_vs_f64(40, 1024, 5000, DType::bf16, loss::FusedLinearCrossEntropy(12, -100, cap), cap, 9);
    EXPECT_LE(e.loss, 1e-2) << cap;
    EXPECT_LE(e.dh, 1e-2) << cap;
    EXPECT_LE(e.dw, 1e-2) << cap;
  }
}

// Ignored rows are skipped: their d(hidden) is exactly zero and gathering the label rows changes nothing.
TEST(LossFusedLinearCE, IgnoredRowsAreSkipped) {
  const int64_t N = 12, H = 8, V = 40;
  std::vector<int64_t> lab = {-100, 3, -100, -100, 5, 6, -100, 39, 0, -100, -100, 1};
  Tensor labels = Tensor::from_vector<int64_t>(lab, {N});
  Generator gen(3);
  Tensor h = randn({N, H}, gen, DType::f32).set_requires_grad(true);
  Tensor w = randn({V, H}, gen, DType::f32).set_requires_grad(true);
  autograd::backward(loss::FusedLinearCrossEntropy(2)(h, w, labels));
  std::vector<double> dh = h.grad().to_doubles();
  for (int64_t r = 0; r < N; ++r)
    for (int64_t k = 0; k < H; ++k) {
      if (lab[size_t(r)] == -100) {
        EXPECT_EQ(dh[size_t(r * H + k)], 0.0) << r;
      }
    }
  Tensor h2 = h.detach().set_requires_grad(true), w2 = w.detach().set_requires_grad(true);
  autograd::backward(loss::MaskedCrossEntropy()(ops::linear(h2, w2), labels));
  EXPECT_LE(rel_diff(dh, h2.grad().to_doubles()), 1e-6);
  EXPECT_LE(rel_diff(w.grad().to_doubles(), w2.grad().to_doubles()), 1e-6);
}

// set_weight_grad_in_place: d(weight) lands in the existing .grad during forward (added to what is there),
// exactly as the default mode's gradient would be accumulated; upstream gradients other than 1 and a second
// backward are refused; without an existing .grad it behaves as the default mode.
TEST(LossFusedLinearCE, WeightGradInPlace) {
  const int64_t N = 9, H = 6, V = 23;
  Tensor labels = make_labels({N}, V, 44);
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    Tensor h = ops::to_dtype(rand_leaf({N, H}, 45, false), dt).set_requires_grad(true);
    Tensor w1 = ops::to_dtype(rand_leaf({V, H}, 46, false), dt).set_requires_grad(true);
    Tensor w2 = w1.detach().set_requires_grad(true);
    Tensor prior = ops::to_dtype(rand_leaf({V, H}, 47, false), dt);
    w1.set_grad(ops::scale(prior, 1.0));  // private copies
    w2.set_grad(ops::scale(prior, 1.0));
    Tensor l1 = loss::FusedLinearCrossEntropy(4).set_weight_grad_in_place(true)(h, w1, labels);
    EXPECT_GT(rel_diff(w1.grad().to_doubles(), prior.to_doubles()), 1e-3);  // added in forward
    autograd::backward(l1);
    autograd::backward(loss::FusedLinearCrossEntropy(4)(h.detach().set_requires_grad(true), w2, labels));
    EXPECT_LE(rel_diff(w1.grad().to_doubles(), w2.grad().to_doubles()), dt == DType::bf16  ? 1e-2
                                                                        : dt == DType::f32 ? 1e-6
                                                                                           : 1e-12)
        << dtype_name(dt);
    EXPECT_TRUE(h.grad().defined());
  }
  Tensor h = rand_leaf({N, H}, 48), w = rand_leaf({V, H}, 49);
  w.set_grad(Tensor::zeros({V, H}, DType::f64));
  Tensor loss = loss::FusedLinearCrossEntropy(4).set_weight_grad_in_place(true)(h, w, labels);
  EXPECT_NE(
      error_of([&] { autograd::backward({loss}, {Tensor::full({}, 2.0, DType::f64)}); }).find("upstream gradient"),
      std::string::npos);
  Tensor w4 = rand_leaf({V, H}, 51);
  w4.set_grad(Tensor::zeros({V, H}, DType::f64));
  Tensor twice = loss::FusedLinearCrossEntropy(4).set_weight_grad_in_place(true)(h, w4, labels);
  autograd::backward(twice, /*retain_graph=*/true);
  try {
    autograd::backward(twice);
    ADD_FAILURE() << "a second backward must throw: d(weight) was added once, in forward";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("twice"), std::string::npos) << e.what();
  }
  Tensor w3 = rand_leaf({V, H}, 50);  // no .grad yet: d(weight) goes through backward
  autograd::backward(loss::FusedLinearCrossEntropy(4).set_weight_grad_in_place(true)(h, w3, labels));
  ASSERT_TRUE(w3.grad().defined());
}

// A NaN in a label row's hidden state gives a NaN loss, as the masked loss does.
TEST(LossFusedLinearCE, NanPropagates) {
  Tensor h = rand_leaf({3, 4}, 5, false), w = rand_leaf({20, 4}, 6, false);
  h.data<double>()[5] = NAN;
  Tensor labels = Tensor::from_vector<int64_t>({2, 7, 9}, {3});
  EXPECT_TRUE(std::isnan(loss::FusedLinearCrossEntropy(2)(h, w, labels).item()));
  EXPECT_TRUE(std::isnan(
      loss::FusedLinearCrossEntropy(2)(ops::to_dtype(h, DType::f32), ops::to_dtype(w, DType::f32), labels).item()));
}

namespace {

// Peak growth of the caching allocator over one bf16 forward (+ backward when grad) at SmolLM2's vocabulary.
size_t fused_peak(int64_t N, int64_t H, int64_t V, bool grad, double* loss_out) {
  Generator gen(71);
  Tensor h = ops::to_dtype(randn({N, H}, gen, DType::f32), DType::bf16).set_requires_grad(grad);
  Tensor w = ops::to_dtype(ops::scale(randn({V, H}, gen, DType::f32), 0.1), DType::bf16).set_requires_grad(grad);
  Tensor labels = make_labels({N}, V, 72);
  auto& alloc = CachingAllocator::cpu();
  const size_t before = alloc.stats().current_bytes;
  alloc.reset_peak();
  {
    Tensor loss = loss::FusedLinearCrossEntropy()(h, w, labels);
    *loss_out = loss.item();
    if (grad) autograd::backward(loss);
  }
  return alloc.stats().peak_bytes - before;
}

}  // namespace

// Forward + backward never holds anything [tokens, vocab]: the peak is far below the fp32 logits and
// within the chunk budget (64 MB) + the fp32 d(weight) tile (8 MB) + the bf16 gradient tile (2 MB) + d(weight)
// twice (the node's and the leaf's private .grad copy) + a few [tokens, hidden] buffers, whatever the number of
// tokens.
TEST(LossFusedLinearCE, PeakMemoryIsBoundedAndFarBelowTheLogits) {
  const int64_t H = 64, V = 49152;
  double loss2k = 0, loss8k = 0, loss_nograd = 0;
  const size_t peak2k = fused_peak(2048, H, V, true, &loss2k);
  const size_t peak8k = fused_peak(8192, H, V, true, &loss8k);
  const size_t logits2k = size_t(2048) * V * 4, logits8k = size_t(8192) * V * 4;
  std::printf(
      "FusedLinearCrossEntropy bf16 H=%lld V=%lld: peak growth %.1f MB at 2048 tokens (fp32 logits %.1f MB), "
      "%.1f MB at 8192 tokens (fp32 logits %.1f MB)\n",
      (long long)H, (long long)V, double(peak2k) / 1e6, double(logits2k) / 1e6, double(peak8k) / 1e6,
      double(logits8k) / 1e6);
  EXPECT_TRUE(std::isfinite(loss2k) && std::isfinite(loss8k));
  EXPECT_LT(peak2k, logits2k / 4);
  EXPECT_LT(peak8k, logits8k / 16);
  auto bound = [&](int64_t N) {
    return (size_t(64) << 20) + (size_t(8) << 20) + (size_t(2) << 20) + size_t(2 * V * H) * 2 + size_t(4 * N * H) * 2 +
           (size_t(1) << 20);
  };
  EXPECT_LE(peak2k, bound(2048));
  EXPECT_LE(peak8k, bound(8192));
  // Without gradients: no d(weight), so the peak is about the chunk's logits alone.
  const size_t peak_nograd = fused_peak(8192, H, V, false, &loss_nograd);
  EXPECT_NEAR(loss_nograd, loss8k, 1e-6 * loss8k);
  EXPECT_LT(peak_nograd, (size_t(64) << 20) + (size_t(4) << 20));
  EXPECT_LT(peak_nograd, peak8k - size_t(V) * size_t(H) * 2 / 2);
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
