// autograd/layer_hooks.h through a causal LM: the order the hooks fire in, and that a layer's gradients are final
// when its after_backward hook runs (what a sharded data parallel reduces there).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "components/peft/lora.h"
#include "core/grad_node.h"
#include "error_of.h"
#include "models/auto_model.h"
#include "nn/flat_params.h"
#include "ops/view.h"

using namespace automodel;
using automodel::testing::error_of;

namespace {

constexpr int64_t kLayers = 3;

std::unique_ptr<models::LanguageModel> tiny_model() {
  nlohmann::json j{{"model_type", "llama"},
                   {"vocab_size", 97},
                   {"hidden_size", 32},
                   {"intermediate_size", 64},
                   {"num_hidden_layers", kLayers},
                   {"num_attention_heads", 4},
                   {"num_key_value_heads", 2},
                   {"rms_norm_eps", 1e-5},
                   {"max_position_embeddings", 64},
                   {"tie_word_embeddings", false}};
  return models::AutoModelForCausalLM::from_config(models::ModelConfig::from_json(j, "test"), {}, 7);
}

std::vector<std::string> layer_names() {
  std::vector<std::string> names;
  for (int64_t l = 0; l < kLayers; ++l) names.push_back("model.layers." + std::to_string(l));
  return names;
}

Tensor loss_of(const models::LanguageModel& model, const models::ForwardOptions& options) {
  Tensor ids = Tensor::from_vector<int64_t>({5, 17, 3, 42, 8, 9, 60, 1, 2, 33, 71, 4}, {2, 6});
  return models::causal_lm_loss(model.forward(ids, options), ids);
}

// Records the hooks' order, and a copy of each layer's gradient buffer when its backward starts and ends.
struct Recorder {
  std::vector<std::string> events;
  std::vector<std::vector<double>> at_start{size_t(kLayers)}, at_end{size_t(kLayers)};

  std::shared_ptr<autograd::LayerHooks> hooks(const std::vector<nn::FlatParameters>& layer_flats) {
    auto h = std::make_shared<autograd::LayerHooks>();
    h->before_forward = [this](int64_t l) { events.push_back("forward " + std::to_string(l)); };
    h->before_backward = [this, &layer_flats](int64_t l) {
      events.push_back("backward " + std::to_string(l));
      at_start[size_t(l)] = layer_flats[size_t(l)].grad.to_doubles();
    };
    h->after_backward = [this, &layer_flats](int64_t l) {
      events.push_back("backward done " + std::to_string(l));
      at_end[size_t(l)] = layer_flats[size_t(l)].grad.to_doubles();
    };
    return h;
  }
};

const std::vector<std::string> kExpectedOrder = {"forward 0",       "forward 1",       "forward 2",
                                                 "backward 2",      "backward done 2", "backward 1",
                                                 "backward done 1", "backward 0",      "backward done 0"};

bool any_nonzero(const std::vector<double>& v) {
  for (double x : v)
    if (x != 0.0) return true;
  return false;
}

}  // namespace

TEST(LayerHooks, FireInLayerOrderAndSeeEachLayersFinalGradients) {
  for (bool checkpointed : {false, true}) {
    SCOPED_TRACE(checkpointed ? "activation checkpointing" : "plain");
    auto model = tiny_model();
    auto lists = nn::parameters_by_module(*model, layer_names(), /*trainable_only=*/true);
    ASSERT_EQ(lists.size(), size_t(kLayers + 2));  // embeddings, the layers, final norm and LM head
    std::vector<nn::FlatParameters> flats = nn::flatten_parameter_lists(lists);
    const std::vector<nn::FlatParameters> layer_flats(flats.begin() + 1, flats.end() - 1);
    // Two training steps: from the second on the leaves' accumulator nodes are old (made in the first forward).
    for (int step = 0; step < 2; ++step) {
      SCOPED_TRACE("step " + std::to_string(step));
      Recorder rec;
      models::ForwardOptions options;
      options.checkpoint_layers = checkpointed;
      options.layer_hooks = rec.hooks(layer_flats);
      autograd::backward(loss_of(*model, options));
      EXPECT_EQ(rec.events, kExpectedOrder);
      for (int64_t l = 0; l < kLayers; ++l) {
        const std::vector<double> final_grad = layer_flats[size_t(l)].grad.to_doubles();
        EXPECT_TRUE(any_nonzero(final_grad)) << "layer " << l;
        EXPECT_FALSE(any_nonzero(rec.at_start[size_t(l)])) << "layer " << l << ": gradients before its backward";
        // Every element, the RMSNorm weights (accumulated by leaf nodes, not in place) included.
        EXPECT_EQ(rec.at_end[size_t(l)], final_grad) << "layer " << l;
      }
      model->zero_grad();
    }
  }
}

TEST(LayerHooks, FireUnderLoraThoughTheFirstLayersInputNeedsNoGradient) {
  auto model = tiny_model();
  peft::PeftConfig config;
  config.dim = 4;
  peft::apply_lora(*model, config, 3);
  // Nonzero lora_B, so that every adapter gets a nonzero gradient.
  for (auto& [name, p] : model->named_parameters())
    if (name.find("lora_B") != std::string::npos) ops::copy_into(p, Tensor::full(p.shape(), 0.01, p.dtype()));
  std::vector<nn::FlatParameters> layer_flats =
      nn::flatten_parameter_lists(nn::parameters_by_module(*model, layer_names(), /*trainable_only=*/true));
  ASSERT_EQ(layer_flats.size(), size_t(kLayers));  // only the layers hold adapters
  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    Recorder rec;
    models::ForwardOptions options;
    options.layer_hooks = rec.hooks(layer_flats);
    autograd::backward(loss_of(*model, options));
    EXPECT_EQ(rec.events, kExpectedOrder);
    for (int64_t l = 0; l < kLayers; ++l) {
      EXPECT_TRUE(any_nonzero(rec.at_end[size_t(l)])) << "layer " << l;
      EXPECT_EQ(rec.at_end[size_t(l)], layer_flats[size_t(l)].grad.to_doubles()) << "layer " << l;
    }
    model->zero_grad();
  }
}

TEST(LayerHooks, ChangeNoValueAndRecordNoBackwardWithoutGradMode) {
  auto model = tiny_model();
  const std::vector<double> plain = loss_of(*model, {}).to_doubles();
  std::vector<nn::FlatParameters> none;
  Recorder rec;
  models::ForwardOptions options;
  options.layer_hooks = rec.hooks(none);
  EXPECT_EQ(loss_of(*model, options).to_doubles(), plain);
  rec.events.clear();
  NoGradGuard no_grad;
  const Tensor loss = loss_of(*model, options);
  EXPECT_FALSE(loss.requires_grad());
  EXPECT_EQ(rec.events, (std::vector<std::string>{"forward 0", "forward 1", "forward 2"}));
}

TEST(LayerHooks, ParametersByModuleCutACausalLmPerLayer) {
  auto model = tiny_model();
  auto lists = nn::parameters_by_module(*model, layer_names(), /*trainable_only=*/false);
  ASSERT_EQ(lists.size(), size_t(kLayers + 2));
  EXPECT_EQ(lists.front().size(), 1u);
  EXPECT_EQ(lists.front()[0].first, "model.embed_tokens.weight");
  for (int64_t l = 0; l < kLayers; ++l)
    for (const auto& [name, t] : lists[size_t(l + 1)])
      EXPECT_EQ(name.rfind("model.layers." + std::to_string(l) + ".", 0), 0u) << name;
  EXPECT_EQ(lists.back().front().first, "model.norm.weight");
  EXPECT_EQ(lists.back().back().first, "lm_head.weight");
  // A module whose parameters another one interrupts cannot be one buffer.
  const std::string err = error_of([&] {
    nn::parameters_by_module(*model, {"model.layers.1", "model"}, /*trainable_only=*/false);
  });
  EXPECT_NE(err.find("'model' are not consecutive"), std::string::npos) << err;
}
