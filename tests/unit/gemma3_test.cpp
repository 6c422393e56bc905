// Gemma 3: the gemma3_text family's reading of config.json (sliding pattern, RoPE per layer type, older keys and
// their defaults, refusals), the vision-language config's checks, and the bidirectional image blocks of the
// materialised attention (transformers' blockwise overlay on the causal and sliding-window masks).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/rng.h"
#include "error_of.h"
#include "models/auto_model.h"
#include "models/gemma3_vision.h"
#include "models/vision_language_model.h"
#include "nn/eager.h"
#include "ops/attention.h"
#include "tiny_model_config.h"

using namespace automodel;
using automodel::testing::error_of;
using nlohmann::json;

namespace {

bool has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

json gemma3_text(int64_t layers = 4) {
  json j = automodel::testing::tiny_model_config("gemma3_text");
  j["num_hidden_layers"] = layers;
  j["head_dim"] = 8;
  j["sliding_window"] = 16;
  return j;
}

std::unique_ptr<models::CausalLM> build(const json& j) {
  return models::build_causal_lm(models::ModelConfig::from_json(j, "config.json"), DType::f32);
}

json gemma3_vlm() {
  json text = gemma3_text(2);
  return json{{"model_type", "gemma3"},
              {"text_config", text},
              {"vision_config",
               {{"model_type", "siglip_vision_model"},
                {"hidden_size", 16},
                {"intermediate_size", 32},
                {"num_hidden_layers", 1},
                {"num_attention_heads", 2},
                {"image_size", 32},
                {"patch_size", 8},
                {"vision_use_head", false}}},
              {"mm_tokens_per_image", 4},
              {"image_token_index", 90},
              {"boi_token_index", 91},
              {"eoi_token_index", 92}};
}

std::string vlm_error(const json& j) {
  return error_of([&] {
    models::build_gemma3_vision_language_model(models::VisionLanguageConfig::from_json(j, "config.json"), DType::f32);
  });
}

}  // namespace

TEST(Gemma3Text, PerLayerTypeRopeAndLayerTypes) {
  json j = gemma3_text(3);
  j["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention"};
  j["rope_parameters"] = {{"full_attention", {{"rope_type", "linear"}, {"rope_theta", 5e5}, {"factor", 8.0}}},
                          {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 100.0}}}};
  auto model = build(j);
  const models::ModelConfig& c = model->config();
  EXPECT_EQ(c.layer_windows, (std::vector<int64_t>{16, 0, 16}));
  EXPECT_EQ(c.rope.type, "linear");
  EXPECT_EQ(c.rope.theta, 5e5);
  EXPECT_EQ(c.rope.factor, 8.0);
  ASSERT_TRUE(c.sliding_rope.has_value());
  EXPECT_EQ(c.sliding_rope->theta, 100.0);
  EXPECT_EQ(c.query_pre_attn_scalar, 256);  // transformers' default
}

TEST(Gemma3Text, OlderKeysAndTheirDefaults) {
  // sliding_window_pattern 2: every second layer is global; no rope keys: bases 1e6 (global) and 1e4 (local).
  json j = gemma3_text(4);
  j["sliding_window_pattern"] = 2;
  auto model = build(j);
  const models::ModelConfig& c = model->config();
  EXPECT_EQ(c.layer_windows, (std::vector<int64_t>{16, 0, 16, 0}));
  EXPECT_EQ(c.rope.theta, 1e6);
  EXPECT_EQ(c.sliding_rope->theta, 1e4);
  // Given: rope_theta, rope_local_base_freq, rope_scaling; without a pattern, every sixth layer is global.
  j = gemma3_text(7);
  j["rope_theta"] = 3e5;
  j["rope_local_base_freq"] = 77.0;
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 4.0}};
  auto other = build(j);
  const models::ModelConfig& d = other->config();
  EXPECT_EQ(d.layer_windows, (std::vector<int64_t>{16, 16, 16, 16, 16, 0, 16}));
  EXPECT_EQ(d.rope.theta, 3e5);
  EXPECT_EQ(d.rope.type, "linear");
  EXPECT_EQ(d.sliding_rope->theta, 77.0);
  EXPECT_EQ(d.sliding_rope->type, "default");
}

TEST(Gemma3Text, RefusalsNameTheKey) {
  json j = gemma3_text();
  j["use_bidirectional_attention"] = true;
  EXPECT_TRUE(has(error_of([&] { build(j); }), "use_bidirectional_attention")) << error_of([&] { build(j); });
  j = gemma3_text();
  j["sliding_window_pattern"] = 0;
  EXPECT_TRUE(has(error_of([&] { build(j); }), "sliding_window_pattern"));
  j = gemma3_text();
  j["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}}}, {"sliding_attention", 5}};
  EXPECT_TRUE(has(error_of([&] { build(j); }), "rope_parameters.sliding_attention"));
  j["rope_parameters"]["sliding_attention"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  EXPECT_TRUE(has(error_of([&] { build(j); }), "not supported for the sliding-window layers"));
  j = gemma3_text();
  j["rope_local_base_freq"] = -1.0;
  EXPECT_TRUE(has(error_of([&] { build(j); }), "rope_local_base_freq"));
}

TEST(Gemma3Vision, ConfigChecksNameTheKey) {
  EXPECT_EQ(vlm_error(gemma3_vlm()), "");
  json j = gemma3_vlm();
  j["mm_tokens_per_image"] = 5;
  EXPECT_TRUE(has(vlm_error(j), "mm_tokens_per_image")) << vlm_error(j);
  j["mm_tokens_per_image"] = 9;  // 3 per side do not pool 4 patches per side
  EXPECT_TRUE(has(vlm_error(j), "do not evenly pool")) << vlm_error(j);
  j = gemma3_vlm();
  j["vision_config"]["vision_use_head"] = true;
  EXPECT_TRUE(has(vlm_error(j), "vision_config.vision_use_head"));
  j = gemma3_vlm();
  j["vision_config"]["model_type"] = "clip_vision_model";
  EXPECT_TRUE(has(vlm_error(j), "vision_config.model_type"));
  j = gemma3_vlm();
  j["vision_config"]["num_attention_heads"] = 3;
  EXPECT_TRUE(has(vlm_error(j), "vision_config.hidden_size"));
  j = gemma3_vlm();
  j["vision_config"]["patch_size"] = 64;
  EXPECT_TRUE(has(vlm_error(j), "vision_config.patch_size"));
  j = gemma3_vlm();
  j["vision_config"]["image_size"] = int64_t(1) << 40;
  j["vision_config"]["patch_size"] = 1;
  EXPECT_TRUE(has(vlm_error(j), "more than this machine's physical memory")) << vlm_error(j);
  j["vision_config"]["image_size"] = 64;
  j["vision_config"]["hidden_size"] = int64_t(1) << 40;
  EXPECT_TRUE(has(vlm_error(j), "more than 2^64 bytes")) << vlm_error(j);
  j = gemma3_vlm();
  j["text_config"] = "gemma";
  EXPECT_TRUE(has(vlm_error(j), "text_config"));
  j = gemma3_vlm();
  j["text_config"]["model_type"] = "llama";
  EXPECT_TRUE(has(vlm_error(j), "gemma3_text"));
  j = gemma3_vlm();
  j["image_token_index"] = -4;
  EXPECT_TRUE(has(vlm_error(j), "image_token_index"));
  j = gemma3_vlm();
  j["model_type"] = "paligemma";
  EXPECT_TRUE(has(vlm_error(j), "supported image-text-to-text model types: gemma3"));
}

TEST(Gemma3Vision, SparseHubTextConfigGetsGemma3TextDefaults) {
  // google/gemma-3-4b-it's text_config lists only what differs from Gemma3TextConfig's defaults.
  json j = gemma3_vlm();
  j["text_config"] = {{"model_type", "gemma3_text"}, {"hidden_size", 64}, {"num_hidden_layers", 2}};
  const models::VisionLanguageConfig c = models::VisionLanguageConfig::from_json(j, "config.json");
  EXPECT_EQ(c.text.vocab_size, 262208);
  EXPECT_EQ(c.text.num_attention_heads, 8);
  EXPECT_EQ(c.text.head_dim, 256);
  EXPECT_EQ(c.text.hidden_size, 64);
}

TEST(Gemma3Vision, ImageTokensMustMatchTheImages) {
  auto model = models::build_gemma3_vision_language_model(
      models::VisionLanguageConfig::from_json(gemma3_vlm(), "config.json"), DType::f32);
  models::DecoderInput in(Tensor::from_vector(std::vector<int64_t>{5, 91, 90, 90, 90, 90, 92, 6}, {1, 8}));
  in.pixel_values = Tensor::zeros({2, 3, 32, 32}, DType::f32);
  EXPECT_TRUE(has(error_of([&] { model->forward(in); }), "4 image tokens (id 90) for 2 image(s) of 4 tokens"));
  in.pixel_values = Tensor::zeros({1, 3, 32, 33}, DType::f32);
  EXPECT_TRUE(has(error_of([&] { model->forward(in); }), "[images, 3, 32, 32]"));
  in.pixel_values = Tensor::zeros({1, 3, 32, 32}, DType::f32);
  EXPECT_EQ(model->forward(in).shape(), Shape({1, 8, 97}));
  in.input_ids = Tensor::from_vector(std::vector<int64_t>{5, 91, 90, 90, 90, 90, 92, 97}, {1, 8});
  EXPECT_TRUE(has(error_of([&] { model->forward(in); }), "token id 97 at batch row 0, position 7"));
}

// Query p sees key j when causal (j <= p) or in p's block (same id >= 0), and within the window.
TEST(AttentionBlocks, EagerMatchesTheBlockwiseOverlay) {
  Generator gen(3);
  const int64_t T = 9, D = 4;
  Tensor q = randn({1, T, 1, D}, gen, DType::f64), k = randn({1, T, 1, D}, gen, DType::f64),
         v = randn({1, T, 1, D}, gen, DType::f64);
  const std::vector<int64_t> blocks{-1, 0, 0, 0, 0, -1, 1, 1, -1};
  for (int64_t window : {0, 3}) {
    ops::AttentionOptions o;
    o.window = window;
    o.bidirectional_blocks = Tensor::from_vector(blocks, {1, T});
    const std::vector<double> out = nn::attention_eager(q, k, v, o).to_doubles();
    const std::vector<double> qd = q.to_doubles(), kd = k.to_doubles(), vd = v.to_doubles();
    for (int64_t p = 0; p < T; ++p) {
      std::vector<double> w(T, 0.0);
      double total = 0;
      for (int64_t j = 0; j < T; ++j) {
        const bool block = blocks[p] >= 0 && blocks[p] == blocks[j];
        if (!((j <= p || block) && (window == 0 || p - j < window))) continue;
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += qd[p * D + d] * kd[j * D + d];
        total += (w[j] = std::exp(s / 2.0));
      }
      for (int64_t d = 0; d < D; ++d) {
        double expect = 0;
        for (int64_t j = 0; j < T; ++j) expect += w[j] / total * vd[j * D + d];
        EXPECT_NEAR(out[p * D + d], expect, 1e-12) << "window " << window << " query " << p;
      }
    }
  }
}
