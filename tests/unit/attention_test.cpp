// ops::attention: forward against a naive reference, f64 gradient checks (GQA, windows, softcap,
// packed sequences, bidirectional blocks, decoding with Tq < Tk), error cases, and the tiled kernel's memory bound.
#include "ops/attention.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include "autograd/engine.h"
#include "core/allocator.h"
#include "core/rng.h"
#include "error_of.h"
#include "gradcheck.h"
#include "kernels/cpu/amx.h"
#include "kernels/cpu/attention.h"

using namespace automodel;
using automodel::testing::expect_gradients_match;
using automodel::testing::rand_leaf;

namespace {

// The bf16 tile products run on AMX where the machine has it, else on AVX512-BF16: where AMX is
// there, tests run both. Restores the switch (on unless AUTOMODEL_AMX=0) on scope exit.
struct AmxModes {
  const bool was_on = cpu::amx_bf16_enabled();
  std::vector<bool> modes = cpu::amx_bf16_available() ? std::vector<bool>{true, false} : std::vector<bool>{false};
  ~AmxModes() { cpu::set_amx_bf16_enabled(was_on); }
};

// Straightforward attention in double over [B, T, H, D] tensors: every score, then softmax.
std::vector<double> reference(const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttentionOptions& o,
                              const std::vector<int64_t>& ids, const std::vector<int64_t>& blocks = {}) {
  const int64_t B = q.size(0), Tq = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t Tk = k.size(1), Hkv = k.size(2), Dv = v.size(3), G = Hq / Hkv, off = Tk - Tq;
  const double scale = o.scale != 0 ? o.scale : 1 / std::sqrt(double(D));
  std::vector<double> qv = q.to_doubles(), kv = k.to_doubles(), vv = v.to_doubles();
  std::vector<double> out(size_t(B * Tq * Hq * Dv), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t qp = i + off;
        std::vector<double> s(size_t(Tk), -std::numeric_limits<double>::infinity());
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < Tk; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += qv[size_t(((b * Tq + i) * Hq + h) * D + d)] * kv[size_t(((b * Tk + j) * Hkv + h / G) * D + d)];
          dot *= scale;
          if (o.softcap > 0) dot = o.softcap * std::tanh(dot / o.softcap);
          const bool block = !blocks.empty() && blocks[size_t(b * Tk + qp)] >= 0 &&
                             blocks[size_t(b * Tk + qp)] == blocks[size_t(b * Tk + j)];
          bool ok = (!o.causal || j <= qp || block) && (o.window <= 0 || qp - j < o.window) &&
                    (ids.empty() || ids[size_t(b * Tk + j)] == ids[size_t(b * Tk + qp)]);
          if (ok) s[size_t(j)] = dot, mx = std::max(mx, dot);
        }
        if (mx == -std::numeric_limits<double>::infinity()) continue;
        double sum = 0;
        for (auto& x : s) sum += (x = std::exp(x - mx));
        for (int64_t j = 0; j < Tk; ++j)
          for (int64_t d = 0; d < Dv; ++d)
            out[size_t(((b * Tq + i) * Hq + h) * Dv + d)] +=
                s[size_t(j)] / sum * vv[size_t(((b * Tk + j) * Hkv + h / G) * Dv + d)];
      }
  return out;
}

struct Case {
  Case(int64_t b, int64_t tq, int64_t tk, int64_t hq, int64_t hkv, int64_t d, int64_t dv, bool causal_ = true,
       int64_t window_ = 0, double softcap_ = 0)
      : B(b), Tq(tq), Tk(tk), Hq(hq), Hkv(hkv), D(d), Dv(dv), causal(causal_), window(window_), softcap(softcap_) {}
  int64_t B, Tq, Tk, Hq, Hkv, D, Dv;
  bool causal;
  int64_t window;
  double softcap;
  std::vector<int64_t> ids;     // [B * Tk] or empty
  std::vector<int64_t> blocks;  // [B * Tk] bidirectional blocks (-1 outside) or empty
};

ops::AttentionOptions options_of(const Case& c, DType ids_dtype = DType::i64) {
  ops::AttentionOptions o;
  o.causal = c.causal;
  o.window = c.window;
  o.softcap = c.softcap;
  if (!c.ids.empty()) {
    std::vector<double> d(c.ids.begin(), c.ids.end());
    o.seq_ids = Tensor::from_values(d, {c.B, c.Tk}, ids_dtype);
  }
  if (!c.blocks.empty()) o.bidirectional_blocks = Tensor::from_vector(c.blocks, {c.B, c.Tk});
  return o;
}

double max_rel_err(const std::vector<double>& a, const std::vector<double>& ref) {
  double err = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(a[i] - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return err / scale;
}

void check_forward(const Case& c, DType dt, double tol, uint64_t seed = 7) {
  Tensor q = rand_leaf({c.B, c.Tq, c.Hq, c.D}, seed, false), k = rand_leaf({c.B, c.Tk, c.Hkv, c.D}, seed + 1, false),
         v = rand_leaf({c.B, c.Tk, c.Hkv, c.Dv}, seed + 2, false);
  ops::AttentionOptions o = options_of(c);
  std::vector<double> ref = reference(q, k, v, o, c.ids, c.blocks);
  if (dt != DType::f64) {
    // Reference from the rounded inputs.
    auto cast = [&](const Tensor& t) { return Tensor::from_values(t.to_doubles(), t.shape(), dt); };
    q = cast(q), k = cast(k), v = cast(v);
    ref = reference(q, k, v, o, c.ids, c.blocks);
  }
  Tensor out = ops::attention(q, k, v, o);
  ASSERT_EQ(out.shape(), (Shape{c.B, c.Tq, c.Hq, c.Dv}));
  EXPECT_LE(max_rel_err(out.to_doubles(), ref), tol) << dtype_name(dt) << " Tq=" << c.Tq << " Tk=" << c.Tk;
}

void check_gradients(const Case& c, uint64_t seed = 11, DType ids_dtype = DType::i64) {
  Tensor q = rand_leaf({c.B, c.Tq, c.Hq, c.D}, seed), k = rand_leaf({c.B, c.Tk, c.Hkv, c.D}, seed + 1),
         v = rand_leaf({c.B, c.Tk, c.Hkv, c.Dv}, seed + 2);
  ops::AttentionOptions o = options_of(c, ids_dtype);
  // The forward must also agree with the reference.
  {
    NoGradGuard ng;
    EXPECT_LE(max_rel_err(ops::attention(q, k, v, o).to_doubles(), reference(q, k, v, o, c.ids, c.blocks)), 1e-12);
  }
  expect_gradients_match([&](const std::vector<Tensor>& in) { return ops::attention(in[0], in[1], in[2], o); },
                         {q, k, v}, 1e-6, 1e-6);
}

}  // namespace

TEST(Attention, ForwardMatchesReferenceAcrossTiles) {
  // Sizes that cross the 64-row / 64-key tiles, unaligned window starts, GQA, decode.
  std::vector<Case> cases = {
      {1, 130, 130, 4, 2, 8, 8},
      {2, 70, 70, 2, 1, 5, 7, true, 20},
      {1, 100, 100, 3, 3, 16, 16, false},
      {1, 65, 200, 4, 1, 12, 12, true, 70, 3.0},
      {1, 1, 150, 8, 2, 20, 20},
      {1, 5, 150, 8, 2, 20, 20, true, 33},
      {1, 70, 70, 2, 1, 8, 8, true, int64_t(1) << 40},  // a window longer than the sequence
      {1, 70, 70, 2, 1, 8, 8, false, 30},               // window without causality: only the lower bound
  };
  AmxModes amx;
  for (const Case& c : cases) {
    check_forward(c, DType::f64, 1e-12);
    check_forward(c, DType::f32, 1e-5);
    for (bool on : amx.modes) {
      cpu::set_amx_bf16_enabled(on);
      SCOPED_TRACE(on ? "AMX" : "AVX512-BF16");
      check_forward(c, DType::bf16, 1e-2);
    }
  }
}

// bf16 forward and gradients against f64 on the same (bf16-rounded) inputs. With 16 or more queries
// bf16 runs the AVX512-BF16 kernel (bf16 tile products, one backward pass), with fewer the fp32-tile
// kernel; both must land within bf16 rounding, with the tile products on AMX and on AVX512-BF16.
TEST(Attention, Bf16GradientsMatchF64AcrossTiles) {
  std::vector<Case> cases = {
      {1, 130, 130, 4, 2, 64, 64},        {2, 70, 70, 2, 1, 5, 7, true, 20},
      {1, 100, 100, 3, 3, 16, 16, false}, {1, 65, 200, 4, 1, 12, 12, true, 70, 3.0},
      {1, 20, 150, 8, 2, 20, 20},         {1, 5, 150, 8, 2, 20, 20, true, 33},
      {1, 129, 129, 9, 3, 33, 80},        {1, 70, 70, 2, 1, 8, 8, false, 30},
  };
  Case packed{2, 150, 150, 2, 1, 64, 64};
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 150; ++t) packed.ids.push_back(b == 0 ? t / 40 : (t < 100 ? 0 : 1));
  cases.push_back(packed);
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "Tq=" << c.Tq << " Tk=" << c.Tk << " Hq=" << c.Hq << " Hkv=" << c.Hkv
                                      << " D=" << c.D << " Dv=" << c.Dv << " window=" << c.window);
    ops::AttentionOptions o = options_of(c);
    auto run = [&](DType dt, std::vector<std::vector<double>>& grads) {
      Tensor q = Tensor::from_values(rand_leaf({c.B, c.Tq, c.Hq, c.D}, 3, false).to_doubles(), {c.B, c.Tq, c.Hq, c.D},
                                     DType::bf16);
      Tensor k = Tensor::from_values(rand_leaf({c.B, c.Tk, c.Hkv, c.D}, 4, false).to_doubles(), {c.B, c.Tk, c.Hkv, c.D},
                                     DType::bf16);
      Tensor v = Tensor::from_values(rand_leaf({c.B, c.Tk, c.Hkv, c.Dv}, 5, false).to_doubles(),
                                     {c.B, c.Tk, c.Hkv, c.Dv}, DType::bf16);
      Tensor g = Tensor::from_values(rand_leaf({c.B, c.Tq, c.Hq, c.Dv}, 6, false).to_doubles(), {c.B, c.Tq, c.Hq, c.Dv},
                                     DType::bf16);
      std::vector<Tensor> leaves;
      for (const Tensor& t : {q, k, v})
        leaves.push_back(Tensor::from_values(t.to_doubles(), t.shape(), dt).set_requires_grad(true));
      Tensor out = ops::attention(leaves[0], leaves[1], leaves[2], o);
      autograd::backward({out}, {Tensor::from_values(g.to_doubles(), g.shape(), dt)});
      for (const Tensor& l : leaves) grads.push_back(l.grad().to_doubles());
      return out.to_doubles();
    };
    std::vector<std::vector<double>> ref_grads;
    const std::vector<double> ref = run(DType::f64, ref_grads);
    AmxModes amx;
    for (bool on : amx.modes) {
      cpu::set_amx_bf16_enabled(on);
      SCOPED_TRACE(on ? "AMX" : "AVX512-BF16");
      std::vector<std::vector<double>> grads;
      EXPECT_LE(max_rel_err(run(DType::bf16, grads), ref), 1e-2);
      for (size_t i = 0; i < grads.size(); ++i) EXPECT_LE(max_rel_err(grads[i], ref_grads[i]), 2e-2) << "qkv"[i];
    }
  }
}

TEST(Attention, ForwardPackedSequencesAcrossTiles) {
  Case c{2, 150, 150, 2, 1, 8, 8};
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 150; ++t) c.ids.push_back(b == 0 ? t / 40 : (t < 100 ? 0 : 1));
  check_forward(c, DType::f64, 1e-12);
  check_forward(c, DType::f32, 1e-5);
}

TEST(Attention, GradcheckBasic) { check_gradients({2, 7, 7, 2, 2, 5, 5}); }
TEST(Attention, GradcheckGqaRatio2) { check_gradients({1, 13, 13, 4, 2, 5, 5}); }
TEST(Attention, GradcheckGqaRatio4) { check_gradients({1, 13, 13, 4, 1, 5, 3}); }
TEST(Attention, GradcheckWindow) { check_gradients({2, 13, 13, 2, 1, 5, 5, true, 4}); }
TEST(Attention, GradcheckSoftcap) { check_gradients({1, 13, 13, 2, 2, 5, 5, true, 0, 1.5}); }
TEST(Attention, GradcheckWindowSoftcapGqa) { check_gradients({1, 13, 13, 4, 2, 5, 5, true, 3, 2.0}); }
TEST(Attention, GradcheckNonCausal) { check_gradients({1, 7, 7, 2, 1, 5, 5, false}); }
TEST(Attention, GradcheckPackedSeqIds) {
  Case c{1, 8, 8, 2, 1, 5, 5};
  c.ids = {0, 0, 0, 1, 1, 2, 2, 2};
  check_gradients(c, 11, DType::i64);
  check_gradients(c, 12, DType::i32);
  c.causal = false;
  check_gradients(c, 13, DType::i32);
}
TEST(Attention, GradcheckDecodeTqLessThanTk) {
  check_gradients({1, 3, 10, 4, 2, 5, 5});
  check_gradients({2, 1, 7, 2, 1, 5, 5, true, 3});
  Case c{1, 3, 8, 2, 2, 5, 5};
  c.ids = {0, 0, 0, 1, 1, 2, 2, 2};
  check_gradients(c);
}
TEST(Attention, GradcheckAcrossTiles) {
  // 70 queries and keys: two tiles each; window start unaligned; GQA 3:1.
  check_gradients({1, 70, 70, 3, 1, 3, 2, true, 40, 2.0});
}

// Bidirectional blocks (one image's tokens see each other's later keys): blocks straddling the 64-key tiles, at
// the start and end of a row, next to each other, under a window shorter than a block, with packing and GQA.
Case blocks_case(int64_t B, int64_t T, int64_t window, bool with_ids) {
  Case c{B, T, T, 4, 2, 8, 8, true, window};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t block = t < 5 ? 0 : (t >= 50 && t < 90) ? 1 : (t >= 90 && t < 96) ? 2 : (t >= T - 7) ? 3 : -1;
      c.blocks.push_back(b == 1 && block == 2 ? -1 : block);
      if (with_ids) c.ids.push_back(t < 100 ? 0 : 1);
    }
  return c;
}

TEST(Attention, BidirectionalBlocksAcrossTiles) {
  AmxModes amx;
  for (const Case& c : {blocks_case(2, 140, 0, false), blocks_case(1, 140, 20, false), blocks_case(2, 140, 0, true)}) {
    SCOPED_TRACE(::testing::Message() << "window=" << c.window << " ids=" << !c.ids.empty());
    check_forward(c, DType::f64, 1e-12);
    check_forward(c, DType::f32, 1e-5);
    for (bool on : amx.modes) {
      cpu::set_amx_bf16_enabled(on);
      check_forward(c, DType::bf16, 1e-2);
    }
  }
}

TEST(Attention, GradcheckBidirectionalBlocks) {
  Case c{2, 10, 10, 2, 1, 5, 5};
  c.blocks = {0, 0, -1, 1, 1, 1, -1, -1, 2, 2, -1, 4, 4, 4, 4, -1, -1, -1, -1, -1};
  check_gradients(c);
  c.window = 2;  // shorter than a block: the window still bounds the earlier keys
  check_gradients(c, 12);
  Case tiles = blocks_case(1, 70, 0, false);
  tiles.Hq = 2, tiles.Hkv = 1, tiles.D = tiles.Dv = 3;
  check_gradients(tiles, 13);
  Case decode{1, 3, 8, 2, 2, 5, 5};
  decode.blocks = {-1, 0, 0, 0, -1, -1, 1, 1};
  check_gradients(decode, 14);
}

TEST(Attention, BidirectionalBlockThatResumesIsAnError) {
  Tensor q = Tensor::zeros({1, 5, 1, 4}, DType::f32);
  ops::AttentionOptions o;
  o.bidirectional_blocks = Tensor::from_vector(std::vector<int64_t>{0, 0, -1, 0, -1}, {1, 5});
  const std::string e = automodel::testing::error_of([&] { ops::attention(q, q, q, o); });
  EXPECT_NE(e.find("not one contiguous run"), std::string::npos) << e;
  o.bidirectional_blocks = Tensor::from_vector(std::vector<int64_t>{0, 0, -1}, {1, 3});
  EXPECT_NE(automodel::testing::error_of([&] { ops::attention(q, q, q, o); }).find("bidirectional_blocks has shape"),
            std::string::npos);
}

TEST(Attention, NonCausalDecodeSeesOnlyItsSequence) {
  // Every query sees at least its own position, so no row is ever fully masked through the op.
  Case c{1, 2, 6, 1, 1, 4, 4, false};
  c.ids = {0, 0, 0, 1, 1, 1};
  check_forward(c, DType::f64, 1e-12);
  check_forward(c, DType::f32, 1e-5);
}

TEST(Attention, EmptyShapes) {
  for (Shape qs : {Shape{0, 3, 2, 4}, Shape{1, 0, 2, 4}}) {
    Shape ks = {qs[0], 3, 1, 4};
    Tensor q = rand_leaf(qs, 1), k = rand_leaf(ks, 2), v = rand_leaf(ks, 3);
    Tensor out = ops::attention(q, k, v);
    EXPECT_EQ(out.shape(), (Shape{qs[0], qs[1], 2, 4}));
    autograd::backward({out}, {Tensor::zeros(out.shape(), DType::f64)});
    EXPECT_EQ(k.grad().to_doubles(), std::vector<double>(size_t(k.numel()), 0.0));
  }
}

TEST(Attention, Errors) {
  Tensor q = Tensor::zeros({1, 4, 4, 8}), k = Tensor::zeros({1, 4, 3, 8}), v = Tensor::zeros({1, 4, 3, 8});
  EXPECT_THROW(ops::attention(q, k, v), Error);  // 4 query heads, 3 kv heads
  Tensor k2 = Tensor::zeros({1, 4, 2, 6}), v2 = Tensor::zeros({1, 4, 2, 8});
  EXPECT_THROW(ops::attention(q, k2, v2), Error);  // head dim 8 vs 6
  Tensor k3 = Tensor::zeros({1, 4, 2, 8});
  EXPECT_NO_THROW(ops::attention(q, k3, v2));
  EXPECT_THROW(ops::attention(q, k3, Tensor::zeros({1, 5, 2, 8})), Error);              // k/v lengths differ
  EXPECT_THROW(ops::attention(q, k3, Tensor::zeros({1, 4, 2, 8}, DType::f64)), Error);  // dtypes differ
  EXPECT_THROW(ops::attention(Tensor::zeros({1, 4, 4, 8}, DType::i32), Tensor::zeros({1, 4, 2, 8}, DType::i32),
                              Tensor::zeros({1, 4, 2, 8}, DType::i32)),
               Error);
  EXPECT_THROW(ops::attention(Tensor::zeros({4, 4, 8}), k3, v2), Error);     // rank 3
  EXPECT_THROW(ops::attention(Tensor::zeros({1, 5, 4, 8}), k3, v2), Error);  // Tq > Tk
  EXPECT_THROW(ops::attention(Tensor::zeros({2, 4, 4, 8}), k3, v2), Error);  // batch mismatch
  ops::AttentionOptions o;
  o.seq_ids = Tensor::zeros({1, 3}, DType::i64);
  EXPECT_THROW(ops::attention(q, k3, v2, o), Error);  // seq_ids length 3 for 4 keys
  o.seq_ids = Tensor::zeros({4}, DType::i64);
  EXPECT_THROW(ops::attention(q, k3, v2, o), Error);  // rank 1
  o.seq_ids = Tensor::zeros({1, 4}, DType::f32);
  EXPECT_THROW(ops::attention(q, k3, v2, o), Error);  // float ids
  o.seq_ids = Tensor::zeros({1, 4}, DType::i32);
  EXPECT_NO_THROW(ops::attention(q, k3, v2, o));
  ops::AttentionOptions w;
  w.window = -1;
  EXPECT_THROW(ops::attention(q, k3, v2, w), Error);
  ops::AttentionOptions sc;
  sc.softcap = -1;
  EXPECT_THROW(ops::attention(q, k3, v2, sc), Error);
  try {
    ops::attention(q, k, v);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attention"), std::string::npos);
  }
}

TEST(Attention, NonContiguousInputs) {
  // q/k/v as [B, H, T, D] transposed views, as a model produces them.
  Tensor qh = rand_leaf({1, 2, 9, 5}, 1), kh = rand_leaf({1, 1, 9, 5}, 2), vh = rand_leaf({1, 1, 9, 5}, 3);
  auto f = [](const std::vector<Tensor>& in) {
    Tensor q = in[0].as_strided({1, 9, 2, 5}, {90, 5, 45, 1}, 0);
    Tensor k = in[1].as_strided({1, 9, 1, 5}, {45, 5, 45, 1}, 0);
    Tensor v = in[2].as_strided({1, 9, 1, 5}, {45, 5, 45, 1}, 0);
    return ops::attention(q, k, v);
  };
  NoGradGuard ng;
  Tensor out = f({qh, kh, vh});
  Tensor qc =
      Tensor::from_values(qh.as_strided({1, 9, 2, 5}, {90, 5, 45, 1}, 0).to_doubles(), {1, 9, 2, 5}, DType::f64);
  Tensor kc =
      Tensor::from_values(kh.as_strided({1, 9, 1, 5}, {45, 5, 45, 1}, 0).to_doubles(), {1, 9, 1, 5}, DType::f64);
  Tensor vc =
      Tensor::from_values(vh.as_strided({1, 9, 1, 5}, {45, 5, 45, 1}, 0).to_doubles(), {1, 9, 1, 5}, DType::f64);
  EXPECT_LE(max_rel_err(out.to_doubles(), reference(qc, kc, vc, {}, {})), 1e-12);
}

// Forward + backward at T = 4096 (8 heads, head dim 64, f32). The allocator's peak may grow by the
// output, lse and gradients; what the kernels add themselves (per-thread tiles, the backward's
// per-row delta) must stay far below one [T, T] f32 score matrix (64 MiB).
TEST(Attention, MemoryStaysTileSized) {
  const int64_t T = 4096, H = 8, D = 64;
  Generator gen(5);
  Tensor q = randn({1, T, H, D}, gen), k = randn({1, T, H, D}, gen), v = randn({1, T, H, D}, gen);
  Tensor gout = randn({1, T, H, D}, gen);
  q.set_requires_grad(true);
  k.set_requires_grad(true);
  v.set_requires_grad(true);
  auto& alloc = CachingAllocator::cpu();
  const size_t tensor_bytes = CachingAllocator::bucket_size(size_t(T * H * D) * 4);
  const size_t lse_bytes = CachingAllocator::bucket_size(size_t(H * T) * 4);
  const double mib = 1024.0 * 1024.0;

  alloc.reset_peak();
  size_t before = alloc.stats().current_bytes;
  auto t0 = std::chrono::steady_clock::now();
  Tensor out = ops::attention(q, k, v);
  auto t1 = std::chrono::steady_clock::now();
  const size_t fwd_peak = alloc.stats().peak_bytes - before;
  const size_t fwd_extra = fwd_peak - std::min(fwd_peak, tensor_bytes + lse_bytes);  // beyond out and lse

  alloc.reset_peak();
  before = alloc.stats().current_bytes;
  autograd::backward({out}, {gout});
  auto t2 = std::chrono::steady_clock::now();
  const size_t bwd_peak = alloc.stats().peak_bytes - before;
  // dq, dk, dv, each possibly alive twice (the node's result and the leaf's .grad copy).
  const size_t bwd_extra = bwd_peak - std::min(bwd_peak, 6 * tensor_bytes);

  std::printf(
      "[attention T=%lld H=%lld D=%lld f32] forward: peak growth %.2f MiB (%.2f MiB beyond out + lse), %.2f s; "
      "backward: peak growth %.2f MiB (%.2f MiB beyond 2x the gradients), %.2f s; one [T, T] f32 matrix = %.0f MiB\n",
      (long long)T, (long long)H, (long long)D, fwd_peak / mib, fwd_extra / mib,
      std::chrono::duration<double>(t1 - t0).count(), bwd_peak / mib, bwd_extra / mib,
      std::chrono::duration<double>(t2 - t1).count(), T * T * 4 / mib);
  // The kernels alone on preallocated buffers: everything they allocate is scratch.
  Tensor lse = Tensor::empty({1, H, T}), dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()),
         dv = Tensor::empty(v.shape());
  cpu::AttentionShape shape;
  shape.batch = 1;
  shape.q_len = shape.kv_len = T;
  shape.q_heads = shape.kv_heads = H;
  shape.head_dim = shape.v_head_dim = D;
  shape.scale = 0.125;
  alloc.reset_peak();
  before = alloc.stats().current_bytes;
  cpu::attention_forward(shape, q.data<float>(), k.data<float>(), v.data<float>(), out.data<float>(),
                         lse.data<float>());
  cpu::attention_backward(shape, q.data<float>(), k.data<float>(), v.data<float>(), out.data<float>(),
                          gout.data<float>(), lse.data<float>(), dq.data<float>(), dk.data<float>(), dv.data<float>());
  const size_t kernel_scratch = alloc.stats().peak_bytes - before;
  std::printf("[attention T=%lld] kernels' own scratch: %.3f MiB\n", (long long)T, kernel_scratch / mib);
  EXPECT_LT(kernel_scratch, size_t(4 * mib));
  EXPECT_LT(fwd_extra, size_t(4 * mib));
  EXPECT_LT(bwd_extra, size_t(4 * mib));
  EXPECT_LT(fwd_peak + bwd_peak, 8 * tensor_bytes + size_t(32 * mib));
  ASSERT_TRUE(q.grad().defined() && k.grad().defined() && v.grad().defined());
  for (const Tensor& g : {q.grad(), k.grad(), v.grad()}) {
    std::vector<float> gv = g.to_floats();
    for (float x : gv) ASSERT_TRUE(std::isfinite(x));
  }
}
