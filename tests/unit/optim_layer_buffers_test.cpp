// Per-layer flat buffers (nn::flatten_parameter_lists) train exactly as the one buffer they lie in: the optimizer
// takes adjacent buffers as one run, for its norm (clipped or fused) and its stochastic rounding.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "components/optim/adamw8bit.h"
#include "components/optim/optimizer.h"
#include "nn/flat_params.h"
#include "ops/view.h"

using namespace automodel;
using namespace automodel::optim;

namespace {

// Shapes of a small "model" (sizes off the block and alignment grid, over the norm's parallel threshold), cut as the
// recipe cuts a causal LM: embeddings, two layers, the rest.
const std::vector<std::vector<Shape>> kLayout = {{{97, 40}}, {{40}, {64, 40}, {40, 64}}, {{4099}, {128, 130}}, {{40}}};

std::vector<double> values(int64_t n, uint64_t seed, double scale) {
  std::vector<double> v(static_cast<size_t>(n));
  uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (auto& x : v) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    x = (double((s >> 11) & 0xFFFFFF) / double(0x1000000) * 2.0 - 1.0) * scale;
  }
  return v;
}

std::vector<nn::NamedParameters> make_lists(DType dt) {
  std::vector<nn::NamedParameters> lists;
  uint64_t seed = 1;
  for (size_t l = 0; l < kLayout.size(); ++l) {
    lists.emplace_back();
    for (const Shape& shape : kLayout[l]) {
      Tensor t = Tensor::from_values(values(shape_numel(shape), seed++, 0.5), shape, dt);
      t.set_requires_grad(true);
      lists.back().emplace_back("l" + std::to_string(l) + ".p" + std::to_string(lists.back().size()), t);
    }
  }
  return lists;
}

// One model's parameters: as one flat buffer, or per layer.
struct Model {
  std::vector<nn::FlatParameters> flats;
  Tensor all_data, all_grad;  // the whole allocation, 1-D
};

Model make_model(DType dt, bool per_layer) {
  std::vector<nn::NamedParameters> lists = make_lists(dt);
  Model m;
  if (per_layer) {
    m.flats = nn::flatten_parameter_lists(lists);
  } else {
    nn::NamedParameters all;
    for (const auto& l : lists) all.insert(all.end(), l.begin(), l.end());
    m.flats = {nn::flatten_parameters(all)};
  }
  int64_t total = 0;
  for (const auto& f : m.flats) total += f.data.numel();
  m.all_data = m.flats[0].data.as_strided({total}, {1}, m.flats[0].data.offset());
  m.all_grad = m.flats[0].grad.as_strided({total}, {1}, m.flats[0].grad.offset());
  return m;
}

void expect_same_bytes(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.nbytes(), b.nbytes()) << what;
  EXPECT_EQ(std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()), 0) << what;
}

using MakeOptimizer = std::function<std::unique_ptr<Optimizer>(std::vector<ParamGroup>)>;

void expect_per_layer_equals_whole(DType dt, const MakeOptimizer& make, std::optional<double> max_norm,
                                   const std::string& what) {
  Model whole = make_model(dt, false), layers = make_model(dt, true);
  ASSERT_EQ(layers.flats.size(), kLayout.size());
  // The same layout, element for element.
  expect_same_bytes(whole.all_data, layers.all_data, what + " data");
  std::vector<ParamGroup> gw(1), gl(1);
  gw[0].flat = whole.flats;
  gl[0].flat = layers.flats;
  std::unique_ptr<Optimizer> ow = make(std::move(gw)), ol = make(std::move(gl));
  for (int step = 0; step < 3; ++step) {
    const Tensor g =
        Tensor::from_values(values(whole.all_grad.numel(), 100 + uint64_t(step), 0.3), whole.all_grad.shape(), dt);
    ops::copy_into(whole.all_grad, g);
    ops::copy_into(layers.all_grad, g);
    StepOptions o;
    o.max_norm = max_norm;
    o.zero_grad = true;
    const double nw = ow->step(o), nl = ol->step(o);
    EXPECT_EQ(std::memcmp(&nw, &nl, sizeof nw), 0) << what << " step " << step << ": " << nw << " vs " << nl;
    expect_same_bytes(whole.all_data, layers.all_data, what + " step " + std::to_string(step));
  }
  auto sw = ow->state_dict(), sl = ol->state_dict();
  ASSERT_EQ(sw.size(), sl.size()) << what;
  for (auto& [k, v] : sw) {
    ASSERT_TRUE(sl.count(k)) << what << " " << k;
    expect_same_bytes(ops::contiguous(v), ops::contiguous(sl.at(k)), what + " " + k);
  }
  EXPECT_EQ(ow->step_counts(), ol->step_counts()) << what;
}

}  // namespace

TEST(OptimLayerBuffers, FlattenedPerLayerTheLayoutIsThatOfOneBuffer) {
  std::vector<nn::NamedParameters> lists = make_lists(DType::f32);
  nn::NamedParameters all;
  for (const auto& l : lists) all.insert(all.end(), l.begin(), l.end());
  std::vector<nn::NamedParameters> copies = make_lists(DType::f32);
  nn::FlatParameters whole = nn::flatten_parameters(all);
  std::vector<nn::FlatParameters> flats = nn::flatten_parameter_lists(copies);
  size_t slot = 0;
  for (size_t l = 0; l < flats.size(); ++l) {
    EXPECT_EQ(flats[l].data.storage(), flats[0].data.storage());
    EXPECT_EQ(flats[l].grad.storage(), flats[0].grad.storage());
    for (const auto& s : flats[l].slots) {
      const auto& w = whole.slots[slot++];
      EXPECT_EQ(s.name, w.name);
      EXPECT_EQ(flats[l].data.offset() + s.offset, w.offset) << s.name;
      EXPECT_EQ(s.numel, w.numel) << s.name;
    }
    if (l + 1 < flats.size()) {
      EXPECT_EQ(flats[l].data.offset() + flats[l].data.numel(), flats[l + 1].data.offset());
    }
  }
  EXPECT_EQ(slot, whole.slots.size());
}

TEST(OptimLayerBuffers, AdamWStepsAsTheOneBufferBitForBit) {
  auto adamw = [](std::vector<ParamGroup> g) { return std::make_unique<AdamW>(std::move(g)); };
  for (std::optional<double> max_norm : {std::optional<double>(), std::optional<double>(1.0)}) {
    const std::string clip = max_norm ? " clipped" : " fused norm";
    expect_per_layer_equals_whole(DType::f32, adamw, max_norm, "f32" + clip);
    auto master = [](std::vector<ParamGroup> g) {
      auto o = std::make_unique<AdamW>(std::move(g));
      o->set_fp32_master_weights(true);
      return o;
    };
    expect_per_layer_equals_whole(DType::bf16, master, max_norm, "bf16 master" + clip);
    auto sgd = [](std::vector<ParamGroup> g) {
      SGDOptions o;
      o.momentum = 0.9;
      auto s = std::make_unique<SGD>(std::move(g), o);
      s->set_bf16_stochastic_round(true);
      return s;
    };
    expect_per_layer_equals_whole(DType::bf16, sgd, max_norm, "bf16 SGD stochastic rounding" + clip);
  }
}

TEST(OptimLayerBuffers, AdamW8bitStepsAsTheOneBufferBitForBit) {
  for (std::optional<double> max_norm : {std::optional<double>(), std::optional<double>(0.5)}) {
    const std::string clip = max_norm ? " clipped" : " fused norm";
    auto plain = [](std::vector<ParamGroup> g) { return std::make_unique<AdamW8bit>(std::move(g)); };
    expect_per_layer_equals_whole(DType::f32, plain, max_norm, "f32" + clip);
    auto stochastic = [](std::vector<ParamGroup> g) {
      auto o = std::make_unique<AdamW8bit>(std::move(g));
      o->set_bf16_stochastic_round(true);
      return o;
    };
    expect_per_layer_equals_whole(DType::bf16, stochastic, max_norm, "bf16 stochastic rounding" + clip);
  }
}

// A checkpoint's optimizer state is per parameter: what an optimizer over the one buffer saved loads into one over
// per-layer buffers (same keys, shapes and dtypes), and training goes on bit for bit.
TEST(OptimLayerBuffers, StateOfTheOneBufferResumesPerLayer) {
  auto master = [](std::vector<ParamGroup> g) -> std::unique_ptr<Optimizer> {
    auto o = std::make_unique<AdamW>(std::move(g));
    o->set_fp32_master_weights(true);
    return o;
  };
  auto eight_bit = [](std::vector<ParamGroup> g) -> std::unique_ptr<Optimizer> {
    return std::make_unique<AdamW8bit>(std::move(g));
  };
  for (const auto& [what, make] :
       std::vector<std::pair<std::string, MakeOptimizer>>{{"AdamW bf16 master", master}, {"AdamW8bit", eight_bit}}) {
    SCOPED_TRACE(what);
    Model whole = make_model(DType::bf16, false), layers = make_model(DType::bf16, true);
    std::vector<ParamGroup> gw(1), gl(1);
    gw[0].flat = whole.flats;
    gl[0].flat = layers.flats;
    std::unique_ptr<Optimizer> ow = make(std::move(gw)), ol = make(std::move(gl));
    auto step_with = [&](Optimizer& o, Model& m, int step) {
      ops::copy_into(m.all_grad, Tensor::from_values(values(m.all_grad.numel(), 200 + uint64_t(step), 0.3),
                                                     m.all_grad.shape(), DType::bf16));
      StepOptions so;
      so.max_norm = 1.0;
      so.zero_grad = true;
      return o.step(so);
    };
    for (int step = 0; step < 2; ++step) step_with(*ow, whole, step);
    // The resume: weights, then the optimizer state as a checkpoint holds it (copies, by name).
    ops::copy_into(layers.all_data, whole.all_data);
    std::map<std::string, Tensor> saved;
    for (const auto& [k, v] : ow->state_dict()) saved[k] = ops::clone(v);
    ol->load_state_dict(saved);
    ol->set_step_counts(ow->step_counts());
    for (int step = 2; step < 4; ++step) {
      const double nw = step_with(*ow, whole, step), nl = step_with(*ol, layers, step);
      EXPECT_EQ(std::memcmp(&nw, &nl, sizeof nw), 0) << "step " << step;
      expect_same_bytes(whole.all_data, layers.all_data, what + " step " + std::to_string(step));
    }
  }
}
