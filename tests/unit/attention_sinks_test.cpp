// Attention sinks (GPT-OSS, AttentionOptions::sinks): forward against a naive reference in which each head's sink is
// one more score of every row with no value (GptOss's eager_attention_forward), across tiles, with a window, GQA,
// packed sequences and decoding; f64 gradient checks including the sinks; bf16 (both tile-product paths) and its
// gradients against f64; the eager composition against the tiled kernel; bad sinks.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "autograd/engine.h"
#include "core/rng.h"
#include "error_of.h"
#include "gradcheck.h"
#include "kernels/cpu/amx.h"
#include "nn/eager.h"
#include "ops/attention.h"

using namespace automodel;
using automodel::testing::expect_gradients_match;
using automodel::testing::rand_leaf;

namespace {

struct SinkCase {
  SinkCase(int64_t b, int64_t tq, int64_t tk, int64_t hq, int64_t hkv, int64_t d, int64_t window_ = 0)
      : B(b), Tq(tq), Tk(tk), Hq(hq), Hkv(hkv), D(d), window(window_) {}
  int64_t B, Tq, Tk, Hq, Hkv, D;
  int64_t window;
  std::vector<int64_t> ids;  // [B * Tk] or empty
};

ops::AttentionOptions options_of(const SinkCase& c, const Tensor& sinks) {
  ops::AttentionOptions o;
  o.window = c.window;
  o.sinks = sinks;
  if (!c.ids.empty()) o.seq_ids = Tensor::from_vector(c.ids, {c.B, c.Tk});
  return o;
}

// softmax over [scores of the visible keys, sink] in double, the sink's share dropped, times v.
std::vector<double> reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& sinks,
                              const SinkCase& c) {
  const int64_t D = c.D, G = c.Hq / c.Hkv, off = c.Tk - c.Tq;
  const double scale = 1 / std::sqrt(double(D));
  const std::vector<double> qv = q.to_doubles(), kv = k.to_doubles(), vv = v.to_doubles(), sv = sinks.to_doubles();
  std::vector<double> out(size_t(c.B * c.Tq * c.Hq * D), 0.0);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t i = 0; i < c.Tq; ++i) {
        const int64_t p = i + off;
        std::vector<double> w(size_t(c.Tk), 0.0);
        double mx = sv[size_t(h)];
        for (int64_t j = 0; j < c.Tk; ++j) {
          const bool ok = j <= p && (c.window <= 0 || p - j < c.window) &&
                          (c.ids.empty() || c.ids[size_t(b * c.Tk + j)] == c.ids[size_t(b * c.Tk + p)]);
          if (!ok) {
            w[size_t(j)] = -std::numeric_limits<double>::infinity();
            continue;
          }
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot +=
                qv[size_t(((b * c.Tq + i) * c.Hq + h) * D + d)] * kv[size_t(((b * c.Tk + j) * c.Hkv + h / G) * D + d)];
          w[size_t(j)] = dot * scale;
          mx = std::max(mx, w[size_t(j)]);
        }
        double sum = std::exp(sv[size_t(h)] - mx);
        for (double& x : w) sum += (x = std::exp(x - mx));
        for (int64_t j = 0; j < c.Tk; ++j)
          for (int64_t d = 0; d < D; ++d)
            out[size_t(((b * c.Tq + i) * c.Hq + h) * D + d)] +=
                w[size_t(j)] / sum * vv[size_t(((b * c.Tk + j) * c.Hkv + h / G) * D + d)];
      }
  return out;
}

double max_rel_err(const std::vector<double>& a, const std::vector<double>& ref) {
  double err = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(a[i] - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return err / scale;
}

// Sinks around the scores' scale (one large, so that it dominates some rows).
Tensor sinks_for(int64_t heads, uint64_t seed, DType dt = DType::f64) {
  std::vector<double> s = rand_leaf({heads}, seed, false).to_doubles();
  s[0] = 4.0;
  return Tensor::from_values(s, {heads}, dt);
}

std::vector<SinkCase> cases() {
  SinkCase packed{2, 150, 150, 4, 2, 16};
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 150; ++t) packed.ids.push_back(b == 0 ? t / 40 : (t < 100 ? 0 : 1));
  return {{1, 130, 130, 4, 2, 16},    {2, 70, 70, 2, 1, 8, 20},
          {1, 65, 200, 4, 1, 12, 70}, {1, 1, 150, 8, 2, 20},
          {1, 5, 150, 8, 2, 20, 33},  {1, 129, 129, 6, 3, 64, 48},
          {1, 20, 20, 2, 2, 8, 1},    packed};  // window 1: a token sees itself and the sink only
}

// The bf16 tile products run on AMX where the machine has it, else on AVX512-BF16; both are tested where both exist.
struct AmxModes {
  const bool was_on = cpu::amx_bf16_enabled();
  std::vector<bool> modes = cpu::amx_bf16_available() ? std::vector<bool>{true, false} : std::vector<bool>{false};
  ~AmxModes() { cpu::set_amx_bf16_enabled(was_on); }
};

}  // namespace

TEST(AttentionSinks, ForwardMatchesReferenceAcrossTiles) {
  AmxModes amx;
  for (const SinkCase& c : cases()) {
    SCOPED_TRACE(::testing::Message() << "Tq=" << c.Tq << " Tk=" << c.Tk << " window=" << c.window);
    const Tensor q = rand_leaf({c.B, c.Tq, c.Hq, c.D}, 1, false), k = rand_leaf({c.B, c.Tk, c.Hkv, c.D}, 2, false),
                 v = rand_leaf({c.B, c.Tk, c.Hkv, c.D}, 3, false), sinks = sinks_for(c.Hq, 4);
    const std::vector<double> ref = reference(q, k, v, sinks, c);
    EXPECT_LE(max_rel_err(ops::attention(q, k, v, options_of(c, sinks)).to_doubles(), ref), 1e-12);
    auto cast = [](const Tensor& t, DType dt) { return Tensor::from_values(t.to_doubles(), t.shape(), dt); };
    for (DType dt : {DType::f32, DType::bf16}) {
      const Tensor qd = cast(q, dt), kd = cast(k, dt), vd = cast(v, dt);
      // Sinks of another dtype than q (a bf16 model's sinks are bf16; f32 ones work as well).
      const Tensor sd = cast(sinks, dt == DType::bf16 ? DType::bf16 : DType::f32);
      const std::vector<double> ref_d = reference(qd, kd, vd, sd, c);
      for (bool on : amx.modes) {
        cpu::set_amx_bf16_enabled(on);
        const double tol = dt == DType::f32 ? 1e-5 : 1e-2;
        EXPECT_LE(max_rel_err(ops::attention(qd, kd, vd, options_of(c, sd)).to_doubles(), ref_d), tol)
            << dtype_name(dt) << (on ? " AMX" : "");
      }
    }
  }
}

TEST(AttentionSinks, EagerMatchesTheTiledKernel) {
  for (const SinkCase& c : cases()) {
    const Tensor q = rand_leaf({c.B, c.Tq, c.Hq, c.D}, 5, false), k = rand_leaf({c.B, c.Tk, c.Hkv, c.D}, 6, false),
                 v = rand_leaf({c.B, c.Tk, c.Hkv, c.D}, 7, false), sinks = sinks_for(c.Hq, 8);
    const ops::AttentionOptions o = options_of(c, sinks);
    EXPECT_LE(max_rel_err(nn::attention_eager(q, k, v, o).to_doubles(), ops::attention(q, k, v, o).to_doubles()), 1e-12)
        << "Tq=" << c.Tq << " Tk=" << c.Tk;
  }
}

TEST(AttentionSinks, GradcheckIncludingTheSinks) {
  std::vector<SinkCase> small = {
      {2, 7, 7, 2, 2, 5}, {1, 13, 13, 4, 2, 5, 4}, {1, 3, 10, 4, 2, 5}, {1, 66, 66, 2, 1, 3, 40}};
  SinkCase packed{1, 8, 8, 2, 1, 5};
  packed.ids = {0, 0, 0, 1, 1, 2, 2, 2};
  small.push_back(packed);
  for (const SinkCase& c : small) {
    SCOPED_TRACE(::testing::Message() << "Tq=" << c.Tq << " Tk=" << c.Tk << " window=" << c.window);
    Tensor q = rand_leaf({c.B, c.Tq, c.Hq, c.D}, 11), k = rand_leaf({c.B, c.Tk, c.Hkv, c.D}, 12),
           v = rand_leaf({c.B, c.Tk, c.Hkv, c.D}, 13), sinks = sinks_for(c.Hq, 14).set_requires_grad(true);
    auto f = [&](const std::vector<Tensor>& in) { return ops::attention(in[0], in[1], in[2], options_of(c, in[3])); };
    expect_gradients_match(f, {q, k, v, sinks}, 1e-6, 1e-6);
    // The eager composition's gradients too (its sink column through concat and softmax).
    auto eager = [&](const std::vector<Tensor>& in) {
      return nn::attention_eager(in[0], in[1], in[2], options_of(c, in[3]));
    };
    if (c.Tq < 64) expect_gradients_match(eager, {q, k, v, sinks}, 1e-6, 1e-6);  // (its tiles are the kernel's)
  }
}

// bf16 forward and gradients (the sinks' included) against f64 on the same bf16-rounded inputs, on the AVX512-BF16
// tile kernel (16 or more queries) and the fp32-tile one (fewer).
TEST(AttentionSinks, Bf16GradientsMatchF64) {
  AmxModes amx;
  for (const SinkCase& c : cases()) {
    SCOPED_TRACE(::testing::Message() << "Tq=" << c.Tq << " Tk=" << c.Tk << " window=" << c.window);
    auto bf = [](const Tensor& t) { return Tensor::from_values(t.to_doubles(), t.shape(), DType::bf16); };
    const Tensor q = bf(rand_leaf({c.B, c.Tq, c.Hq, c.D}, 21, false)),
                 k = bf(rand_leaf({c.B, c.Tk, c.Hkv, c.D}, 22, false)),
                 v = bf(rand_leaf({c.B, c.Tk, c.Hkv, c.D}, 23, false)),
                 g = bf(rand_leaf({c.B, c.Tq, c.Hq, c.D}, 24, false)), sinks = bf(sinks_for(c.Hq, 25));
    auto run = [&](DType dt, std::vector<std::vector<double>>& grads) {
      std::vector<Tensor> leaves;
      for (const Tensor& t : {q, k, v, sinks})
        leaves.push_back(Tensor::from_values(t.to_doubles(), t.shape(), dt).set_requires_grad(true));
      Tensor out = ops::attention(leaves[0], leaves[1], leaves[2], options_of(c, leaves[3]));
      autograd::backward({out}, {Tensor::from_values(g.to_doubles(), g.shape(), dt)});
      for (const Tensor& l : leaves) grads.push_back(l.grad().to_doubles());
      return out.to_doubles();
    };
    std::vector<std::vector<double>> ref_grads;
    const std::vector<double> ref = run(DType::f64, ref_grads);
    for (bool on : amx.modes) {
      cpu::set_amx_bf16_enabled(on);
      std::vector<std::vector<double>> grads;
      EXPECT_LE(max_rel_err(run(DType::bf16, grads), ref), 1e-2);
      for (size_t i = 0; i < grads.size(); ++i) EXPECT_LE(max_rel_err(grads[i], ref_grads[i]), 2e-2) << i;
    }
  }
}

TEST(AttentionSinks, SinksOfTheWrongShapeOrTypeAreAnError) {
  const Tensor q = Tensor::zeros({1, 4, 4, 8}), k = Tensor::zeros({1, 4, 2, 8}), v = Tensor::zeros({1, 4, 2, 8});
  ops::AttentionOptions o;
  o.sinks = Tensor::zeros({2});  // 2 sinks for 4 query heads
  const std::string message = automodel::testing::error_of([&] { ops::attention(q, k, v, o); });
  EXPECT_NE(message.find("sinks must be a floating [4] tensor"), std::string::npos) << message;
  o.sinks = Tensor::zeros({1, 4});
  EXPECT_THROW(ops::attention(q, k, v, o), Error);
  o.sinks = Tensor::zeros({4}, DType::i64);
  EXPECT_THROW(ops::attention(q, k, v, o), Error);
  o.sinks = Tensor::zeros({4});
  EXPECT_NO_THROW(ops::attention(q, k, v, o));
}
