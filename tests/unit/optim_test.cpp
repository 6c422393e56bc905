// components/optim: LR schedule formulas (NeMo Automodel's OptimizerParamScheduler), optimizer
// steps against hand-computed values, flat-buffer path vs per-tensor path, clip_grad_norm.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>

#include "components/optim/optimizer.h"
#include "components/optim/scheduler.h"
#include "error_of.h"

using namespace automodel;
using namespace automodel::optim;
using automodel::testing::error_of;

namespace {

LRSchedulerConfig base_config(const std::string& style) {
  LRSchedulerConfig c;
  c.init_lr = 0.1;
  c.max_lr = 1.0;
  c.min_lr = 0.1;
  c.lr_warmup_steps = 2;
  c.lr_decay_steps = 10;
  c.lr_decay_style = style;
  return c;
}

struct LrCase {
  std::string style, wsd_style;
  int64_t step;
  double expected;
};

}  // namespace

TEST(OptimScheduler, LrTablePerDecayStyle) {
  const double cos_quarter = 0.1 + 0.9 * 0.5 * (std::cos(M_PI / 4) + 1.0);  // 0.8681980515339464
  const std::vector<LrCase> cases = {
      // warmup: init_lr + (max_lr - init_lr) * step / warmup, for every style
      {"linear", "", 0, 0.1},
      {"linear", "", 1, 0.55},
      {"linear", "", 2, 1.0},
      {"cosine", "", 1, 0.55},
      {"constant", "", 0, 0.1},
      {"WSD", "linear", 1, 0.55},
      {"inverse-square-root", "", 1, 0.55},
      // linear: min + (1 - r) (max - min), r = (step - 2) / 8
      {"linear", "", 6, 0.55},
      {"linear", "", 4, 0.775},
      {"linear", "", 10, 0.1},
      {"linear", "", 11, 0.1},
      {"linear", "", 1000, 0.1},
      // cosine: min + 0.5 (cos(pi r) + 1) (max - min)
      {"cosine", "", 4, cos_quarter},
      {"cosine", "", 6, 0.55},
      {"cosine", "", 10, 0.1},
      {"cosine", "", 12, 0.1},
      // constant: max_lr after warmup, forever
      {"constant", "", 3, 1.0},
      {"constant", "", 10, 1.0},
      {"constant", "", 100, 1.0},
      // inverse-square-root: max(min, max * sqrt(warmup) / sqrt(step)); min_lr beyond decay
      {"inverse-square-root", "", 8, 0.5},
      {"inverse-square-root", "", 10, std::sqrt(0.2)},
      {"inverse-square-root", "", 11, 0.1},
      // WSD, wsd_decay_steps = 4: stable to step 6, then the wsd style over w = (step - 6) / 4
      {"WSD", "linear", 5, 1.0},
      {"WSD", "linear", 6, 1.0},
      {"WSD", "linear", 8, 0.55},
      {"WSD", "linear", 10, 0.1},
      {"WSD", "linear", 11, 0.1},
      {"WSD", "cosine", 7, cos_quarter},
      {"WSD", "cosine", 8, 0.55},
      {"WSD", "exponential", 8, 0.1 + 0.9 * (2.0 * std::sqrt(0.5) - 1.0)},
      {"WSD", "exponential", 10, 0.1},
      {"WSD", "minus_sqrt", 7, 0.55},
      {"WSD", "minus_sqrt", 10, 0.1},
  };
  for (const LrCase& c : cases) {
    LRSchedulerConfig cfg = base_config(c.style);
    if (c.style == "WSD") {
      cfg.wsd_decay_steps = 4;
      cfg.lr_wsd_decay_style = c.wsd_style;
    }
    OptimizerParamScheduler s(cfg);
    EXPECT_NEAR(s.get_lr(c.step), c.expected, 1e-12) << c.style << "/" << c.wsd_style << " step " << c.step;
  }
}

TEST(OptimScheduler, NoWarmupAndGroupOverrides) {
  LRSchedulerConfig cfg = base_config("linear");
  cfg.lr_warmup_steps = 0;
  OptimizerParamScheduler s(cfg);
  EXPECT_NEAR(s.get_lr(0), 1.0, 1e-12);  // no warmup: decay starts at max_lr
  EXPECT_NEAR(s.get_lr(5), 0.55, 1e-12);
  EXPECT_NEAR(s.get_lr(5, 2.0, 0.0), 1.0, 1e-12);  // a group's max_lr / min_lr
}

TEST(OptimScheduler, WeightDecayIncrement) {
  LRSchedulerConfig cfg = base_config("cosine");
  cfg.start_wd = 0.0;
  cfg.end_wd = 0.1;
  cfg.wd_incr_steps = 10;
  cfg.wd_incr_style = "linear";
  OptimizerParamScheduler lin(cfg);
  EXPECT_NEAR(lin.get_wd(0), 0.0, 1e-15);
  EXPECT_NEAR(lin.get_wd(5), 0.05, 1e-15);
  EXPECT_NEAR(lin.get_wd(10), 0.1, 1e-15);
  EXPECT_NEAR(lin.get_wd(11), 0.1, 1e-15);
  cfg.wd_incr_style = "cosine";
  OptimizerParamScheduler cos(cfg);
  EXPECT_NEAR(cos.get_wd(0), 0.0, 1e-15);
  EXPECT_NEAR(cos.get_wd(5), 0.05, 1e-15);
  EXPECT_NEAR(cos.get_wd(10), 0.1, 1e-15);
}

TEST(OptimScheduler, NemoRecipeDefaults) {
  LRSchedulerConfig c = default_scheduler_config(1e-3, 0.01, 50);
  EXPECT_DOUBLE_EQ(c.init_lr, 1e-4);
  EXPECT_DOUBLE_EQ(c.max_lr, 1e-3);
  EXPECT_DOUBLE_EQ(c.min_lr, 1e-5);
  EXPECT_EQ(c.lr_warmup_steps, 5);
  EXPECT_EQ(c.lr_decay_steps, 50);
  EXPECT_EQ(c.lr_decay_style, "cosine");
  EXPECT_EQ(c.wd_incr_style, "constant");
  EXPECT_DOUBLE_EQ(c.start_wd, 0.01);
  EXPECT_DOUBLE_EQ(c.end_wd, 0.01);
  EXPECT_EQ(default_scheduler_config(1e-3, 0, 100000).lr_warmup_steps, 1000);
}

TEST(OptimScheduler, SetsGroupLrAndWeightDecay) {
  Tensor a = Tensor::zeros({3}), b = Tensor::zeros({2});
  ParamGroup g0, g1;
  g0.params = {{"a", a}};
  g1.params = {{"b", b}};
  g1.lr_mult = 0.5;
  g1.wd_mult = 0.0;
  AdamW opt({g0, g1});
  LRSchedulerConfig cfg = base_config("linear");
  cfg.start_wd = cfg.end_wd = 0.02;
  OptimizerParamScheduler s(cfg, &opt);
  EXPECT_NEAR(*opt.param_groups()[0].lr, 0.1, 1e-12);  // step(0) at construction
  s.step();
  EXPECT_NEAR(*opt.param_groups()[0].lr, 0.55, 1e-12);
  EXPECT_NEAR(*opt.param_groups()[1].lr, 0.275, 1e-12);
  EXPECT_NEAR(*opt.param_groups()[0].weight_decay, 0.02, 1e-15);
  EXPECT_EQ(*opt.param_groups()[1].weight_decay, 0.0);
  s.step(5);
  EXPECT_EQ(s.num_steps(), 6);
  EXPECT_NEAR(*opt.param_groups()[0].lr, 0.55, 1e-12);
}

TEST(OptimScheduler, ConfigErrors) {
  auto make = [](LRSchedulerConfig c) { OptimizerParamScheduler s(c); };
  LRSchedulerConfig c = base_config("WSD");
  EXPECT_NE(error_of([&] { make(c); }).find("wsd_decay_steps"), std::string::npos);
  c = base_config("bogus");
  EXPECT_NE(error_of([&] { make(c); }).find("unknown lr_decay_style 'bogus'"), std::string::npos);
  c = base_config("linear");
  c.lr_warmup_steps = 10;
  EXPECT_NE(error_of([&] { make(c); }).find("lr_warmup_steps"), std::string::npos);
  c = base_config("linear");
  c.init_lr = 2.0;
  EXPECT_NE(error_of([&] { make(c); }).find("init_lr"), std::string::npos);
  c = base_config("linear");
  c.min_lr = 2.0;
  EXPECT_NE(error_of([&] { make(c); }).find("max_lr"), std::string::npos);
  c = base_config("linear");
  c.start_wd = 0.1;
  EXPECT_NE(error_of([&] { make(c); }).find("start_wd"), std::string::npos);
  c = base_config("WSD");
  c.wsd_decay_steps = 2;
  c.lr_wsd_decay_style = "step";
  EXPECT_NE(error_of([&] { make(c); }).find("lr_wsd_decay_style"), std::string::npos);
}

// ---- optimizers against hand-computed values (p = 1, lr = 0.1, wd = 0.1, betas 0.9/0.999) ----

namespace {
struct OneParam {
  Tensor p = Tensor::from_values({1.0}, {1});
  void grad(double g) const { p.set_grad(Tensor::from_values({g}, {1})); }
  double value() const { return p.item(); }
};
}  // namespace

TEST(OptimStep, AdamWHandComputed) {
  OneParam x;
  AdamW opt({{"w", x.p}}, AdamOptions{0.1, 0.9, 0.999, 1e-8, 0.1});
  x.grad(0.5);
  opt.step();
  // p = 1 * (1 - 0.01) - 0.1 * (0.05 / 0.1) / (sqrt(0.00025 / 0.001) + 1e-8)
  EXPECT_NEAR(x.value(), 0.890000002, 1e-7);
  x.grad(-0.25);
  opt.step();
  EXPECT_NEAR(x.value(), 0.8544662986878463, 1e-6);
  EXPECT_EQ(opt.step_counts().at("w"), 2);
  auto st = opt.state_dict();
  EXPECT_NEAR(st.at("w.exp_avg").item(), 0.9 * 0.05 + 0.1 * -0.25, 1e-7);
  EXPECT_NEAR(st.at("w.exp_avg_sq").item(), 0.999 * 0.00025 + 0.001 * 0.0625, 1e-9);
}

TEST(OptimStep, AdamL2WeightDecayHandComputed) {
  OneParam x;
  Adam opt({{"w", x.p}}, AdamOptions{0.1, 0.9, 0.999, 1e-8, 0.1});
  x.grad(0.5);
  opt.step();
  EXPECT_NEAR(x.value(), 0.9000000016666666, 1e-7);  // g' = 0.5 + 0.1 * 1
  x.grad(0.5);
  opt.step();
  EXPECT_NEAR(x.value(), 0.8000473404883315, 1e-6);
}

TEST(OptimStep, SgdMomentumNesterovDampening) {
  struct Case {
    SGDOptions o;
    double after1, after2;
  };
  const std::vector<Case> cases = {
      {{0.1, 0.0, 0.0, 0.1, false}, 0.94, 0.94 - 0.1 * (0.5 + 0.094)},  // plain SGD + L2
      {{0.1, 0.9, 0.0, 0.1, false}, 0.94, 0.8266},                      // buf = 0.9 * 0.6 + 0.594
      {{0.1, 0.9, 0.0, 0.1, true}, 0.886, 0.725566},                    // d + 0.9 * buf
      {{0.1, 0.9, 0.5, 0.1, false}, 0.94, 0.8563},                      // first buf undamped
  };
  for (const Case& c : cases) {
    OneParam x;
    SGD opt({{"w", x.p}}, c.o);
    x.grad(0.5);
    opt.step();
    EXPECT_NEAR(x.value(), c.after1, 1e-6);
    x.grad(0.5);
    opt.step();
    EXPECT_NEAR(x.value(), c.after2, 1e-6) << "momentum " << c.o.momentum << " nesterov " << c.o.nesterov;
  }
}

TEST(OptimStep, SkipsParamsWithoutGradAndPerGroupLr) {
  Tensor a = Tensor::from_values({1.0}, {1}), b = Tensor::from_values({1.0}, {1});
  ParamGroup g0, g1;
  g0.params = {{"a", a}};
  g1.params = {{"b", b}};
  g1.lr = 0.5;
  SGD opt({g0, g1}, SGDOptions{0.1});
  opt.step();  // no grads: nothing moves
  EXPECT_EQ(a.item(), 1.0);
  a.set_grad(Tensor::from_values({1.0}, {1}));
  b.set_grad(Tensor::from_values({1.0}, {1}));
  opt.step();
  EXPECT_NEAR(a.item(), 0.9, 1e-7);
  EXPECT_NEAR(b.item(), 0.5, 1e-7);
  opt.zero_grad();
  EXPECT_EQ(a.grad().item(), 0.0);
}

TEST(OptimStep, Bf16ParamsUpdateInFp32AndRound) {
  std::vector<double> vals = {0.5, -1.25, 3.0, 0.0078125, -2.5}, grads = {0.1, -0.3, 0.7, 1e-3, 0.0};
  Tensor p32 = Tensor::from_values(vals, {5}), pbf = Tensor::from_values(vals, {5}, DType::bf16);
  Tensor g32 = Tensor::from_values(grads, {5}, DType::bf16);  // bf16-representable grads for both
  std::vector<double> gv = g32.to_doubles();
  p32.set_grad(Tensor::from_values(gv, {5}));
  pbf.set_grad(Tensor::from_values(gv, {5}, DType::bf16));
  AdamW o32({{"p", p32}}, AdamOptions{0.01, 0.9, 0.999, 1e-8, 0.1});
  AdamW obf({{"p", pbf}}, AdamOptions{0.01, 0.9, 0.999, 1e-8, 0.1});
  o32.step();
  obf.step();
  EXPECT_EQ(obf.state_dict().at("p.exp_avg").dtype(), DType::f32);
  const float* a = p32.data<float>();
  const bf16* b = pbf.data<bf16>();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b[i].bits, float_to_bf16(a[i]).bits) << i;
}

// Mixed precision: with fp32 masters, bf16 weights follow an fp32 run's weights (rounded), even when every single
// update is below half a bf16 ulp and the plain bf16 update loses all of them.
TEST(OptimStep, Bf16Fp32MasterWeightsKeepSmallUpdates) {
  std::vector<double> vals = {1.0, -2.0, 0.75}, grads = {0.5, -0.25, 1.0};
  Tensor p32 = Tensor::from_values(vals, {3}), master = Tensor::from_values(vals, {3}, DType::bf16),
         plain = Tensor::from_values(vals, {3}, DType::bf16);
  SGDOptions o{1e-4};
  SGD s32({{"p", p32}}, o), smaster({{"p", master}}, o), splain({{"p", plain}}, o);
  smaster.set_fp32_master_weights(true);
  for (int step = 0; step < 200; ++step) {
    p32.set_grad(Tensor::from_values(grads, {3}));
    master.set_grad(Tensor::from_values(grads, {3}, DType::bf16));
    plain.set_grad(Tensor::from_values(grads, {3}, DType::bf16));
    s32.step();
    smaster.step();
    splain.step();
  }
  const float* a = p32.data<float>();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(master.data<bf16>()[i].bits, float_to_bf16(a[i]).bits) << i;
    EXPECT_EQ(plain.data<bf16>()[i].bits, float_to_bf16(float(vals[size_t(i)])).bits) << i;  // every update lost
    EXPECT_NE(master.data<bf16>()[i].bits, plain.data<bf16>()[i].bits) << i;
  }
  auto state = smaster.state_dict();
  ASSERT_TRUE(state.count("p.fp32_master"));
  EXPECT_EQ(state.at("p.fp32_master").dtype(), DType::f32);
  EXPECT_FLOAT_EQ(state.at("p.fp32_master").data<float>()[0], a[0]);
  EXPECT_THROW(smaster.set_fp32_master_weights(false), Error);  // only before the first step
}

// ---- flat-buffer path vs per-tensor path: bit for bit ----

namespace {
std::vector<double> random_values(int64_t n, uint64_t seed) {
  std::vector<double> v(static_cast<size_t>(n));
  uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (auto& x : v) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    x = double((s >> 11) & 0xFFFFFF) / double(0x1000000) * 2.0 - 1.0;
  }
  return v;
}

struct Twin {
  NamedTensors tensors;
  nn::FlatParameters flat;
};

Twin make_twin(const std::vector<Shape>& shapes, DType dt) {
  Twin t;
  int64_t total = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    int64_t n = shape_numel(shapes[i]);
    t.flat.slots.push_back({"p" + std::to_string(i), total, n});
    total += (n + 15) / 16 * 16;
  }
  t.flat.data = Tensor::zeros({total}, dt);
  t.flat.grad = Tensor::zeros({total}, dt);
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto& slot = t.flat.slots[i];
    Tensor p = Tensor::from_values(random_values(slot.numel, i + 1), shapes[i], dt);
    t.tensors.push_back({slot.name, p});
    std::memcpy(static_cast<char*>(t.flat.data.raw_data()) + slot.offset * dtype_size(dt), p.raw_data(), p.nbytes());
  }
  return t;
}

void set_grads(Twin& t, int step) {
  for (size_t i = 0; i < t.tensors.size(); ++i) {
    const auto& slot = t.flat.slots[i];
    Tensor& p = t.tensors[i].second;
    Tensor g = Tensor::from_values(random_values(slot.numel, 100 * (step + 1) + i), p.shape(), p.dtype());
    p.set_grad(g);
    std::memcpy(static_cast<char*>(t.flat.grad.raw_data()) + slot.offset * dtype_size(p.dtype()), g.raw_data(),
                g.nbytes());
  }
}

template <class Opt, class Opts>
void expect_flat_equals_tensors(DType dt, Opts o) {
  const std::vector<Shape> shapes = {{37}, {50, 33}, {17, 3}, {5}, {4099}, {130, 257}};  // last: > 1 thread chunk
  Twin t = make_twin(shapes, dt);
  ParamGroup gt, gf;
  gt.params = t.tensors;
  gf.flat = {t.flat};
  Opt a({gt}, o), b({gf}, o);
  for (int s = 0; s < 3; ++s) {
    set_grads(t, s);
    a.step();
    b.step();
  }
  auto sa = a.state_dict(), sb = b.state_dict();
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto& slot = t.flat.slots[i];
    const Tensor& p = t.tensors[i].second;
    const char* fp = static_cast<const char*>(t.flat.data.raw_data()) + slot.offset * dtype_size(dt);
    EXPECT_EQ(std::memcmp(p.raw_data(), fp, p.nbytes()), 0) << a.name() << " " << dtype_name(dt) << " " << slot.name;
    for (auto& [key, st] : sa) {
      if (key.rfind(slot.name + ".", 0) != 0) continue;
      ASSERT_EQ(sb.at(key).numel(), st.numel());
      EXPECT_EQ(std::memcmp(st.raw_data(), sb.at(key).raw_data(), st.nbytes()), 0) << key;
    }
  }
  EXPECT_EQ(b.step_counts().at("p1"), 3);
}
}  // namespace

TEST(OptimFlat, AdamWFlatEqualsPerTensorBitForBit) {
  for (DType dt : {DType::f32, DType::bf16, DType::f64})
    expect_flat_equals_tensors<AdamW>(dt, AdamOptions{1e-2, 0.9, 0.95, 1e-8, 0.1});
}
TEST(OptimFlat, AdamFlatEqualsPerTensorBitForBit) {
  for (DType dt : {DType::f32, DType::bf16})
    expect_flat_equals_tensors<Adam>(dt, AdamOptions{1e-2, 0.8, 0.99, 1e-6, 0.05});
}
TEST(OptimFlat, SgdFlatEqualsPerTensorBitForBit) {
  for (DType dt : {DType::f32, DType::bf16}) {
    expect_flat_equals_tensors<SGD>(dt, SGDOptions{0.1, 0.9, 0.0, 0.01, true});
    expect_flat_equals_tensors<SGD>(dt, SGDOptions{0.1, 0.5, 0.1, 0.0, false});
  }
}

// ---- clip_grad_norm ----

TEST(OptimClip, TotalNormAndScaling) {
  Tensor a = Tensor::zeros({2}), b = Tensor::zeros({1}), c = Tensor::zeros({3});
  a.set_grad(Tensor::from_values({3, 4}, {2}));
  b.set_grad(Tensor::from_values({12}, {1}));
  double total = clip_grad_norm({a, b, c}, 6.5);  // c has no grad: skipped
  EXPECT_DOUBLE_EQ(total, 13.0);
  const double coef = 6.5 / (13.0 + 1e-6);
  EXPECT_NEAR(a.grad().to_doubles()[1], 4 * coef, 1e-6);
  EXPECT_NEAR(b.grad().item(), 12 * coef, 1e-6);

  a.set_grad(Tensor::from_values({3, -4}, {2}));
  b.set_grad(Tensor::from_values({12}, {1}));
  EXPECT_DOUBLE_EQ(clip_grad_norm({a, b}, 100.0), 13.0);  // below max_norm: unchanged
  EXPECT_EQ(a.grad().to_doubles()[1], -4.0);
  EXPECT_DOUBLE_EQ(clip_grad_norm({a, b}, 100.0, INFINITY), 12.0);
  EXPECT_NEAR(clip_grad_norm({a, b}, 100.0, 1.0), 19.0, 1e-12);
  EXPECT_EQ(clip_grad_norm({c}, 1.0), 0.0);
}

TEST(OptimClip, FlatBufferEqualsPerTensor) {
  Twin t = make_twin({{37}, {50, 33}, {4099}}, DType::f32);
  set_grads(t, 0);
  std::vector<Tensor> params;
  for (auto& [n, p] : t.tensors) params.push_back(p);
  double n1 = clip_grad_norm(params, 1.0);
  double n2 = clip_grads({t.flat.grad}, 1.0);
  EXPECT_NEAR(n1, n2, 1e-12 * n1);
  const auto& slot = t.flat.slots[1];
  auto v = t.tensors[1].second.grad().to_doubles();
  const float* f = t.flat.grad.data<float>() + slot.offset;
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(float(v[i]), f[i]);
}

TEST(OptimErrors, BadArguments) {
  Tensor p = Tensor::zeros({3});
  EXPECT_NE(error_of([&] {
              AdamW({{"p", p}}, AdamOptions{1e-3, 1.0, 0.999, 1e-8, 0.0});
            }).find("beta1"),
            std::string::npos);
  EXPECT_NE(error_of([&] { SGD({{"p", p}}, SGDOptions{-1.0}); }).find("lr"), std::string::npos);
  EXPECT_NE(error_of([&] {
              SGD({{"p", p}}, SGDOptions{0.1, 0.0, 0.0, 0.0, true});
            }).find("nesterov"),
            std::string::npos);
  Tensor i = Tensor::zeros({3}, DType::i64);
  EXPECT_NE(error_of([&] { AdamW({{"i", i}}); }).find("f32, f64 or bf16"), std::string::npos);
  AdamW opt({{"p", p}});
  p.set_grad(Tensor::zeros({3}, DType::f64));
  EXPECT_NE(error_of([&] { opt.step(); }).find("gradient of parameter 'p'"), std::string::npos);
  EXPECT_NE(error_of([&] { clip_grad_norm({p}, 1.0, -1.0); }).find("norm_type"), std::string::npos);
}

// Resuming from a saved state (state_dict views + step counts) continues bit for bit.
TEST(OptimState, SaveAndLoadResumesBitForBit) {
  for (int which = 0; which < 2; ++which) {
    Twin t = make_twin({{37}, {50, 33}}, DType::f32);
    Twin u = make_twin({{37}, {50, 33}}, DType::f32);
    auto make = [&](const NamedTensors& ps) -> std::unique_ptr<Optimizer> {
      if (which == 0) return std::make_unique<AdamW>(ps, AdamOptions{1e-2, 0.9, 0.95, 1e-8, 0.1});
      return std::make_unique<SGD>(ps, SGDOptions{0.1, 0.9, 0.0, 0.01, true});
    };
    auto a = make(t.tensors);
    for (int s = 0; s < 2; ++s) {
      set_grads(t, s);
      a->step();
    }
    // Load params and state into a fresh optimizer over other tensors.
    for (size_t i = 0; i < t.tensors.size(); ++i)
      std::memcpy(u.tensors[i].second.raw_data(), t.tensors[i].second.raw_data(), t.tensors[i].second.nbytes());
    auto b = make(u.tensors);
    auto sa = a->state_dict(), sb = b->state_dict();
    ASSERT_EQ(sa.size(), sb.size());
    for (auto& [k, v] : sa) std::memcpy(sb.at(k).raw_data(), v.raw_data(), v.nbytes());
    b->set_step_counts(a->step_counts());
    set_grads(t, 2);
    set_grads(u, 2);
    a->step();
    b->step();
    for (size_t i = 0; i < t.tensors.size(); ++i)
      EXPECT_EQ(
          std::memcmp(u.tensors[i].second.raw_data(), t.tensors[i].second.raw_data(), t.tensors[i].second.nbytes()), 0)
          << a->name() << " " << i;
  }
}
