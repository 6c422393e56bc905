// models/: config parsing, the family registry, load options, save/load round trips.
#include <gtest/gtest.h>

#include "core/grad_node.h"
#include "error_of.h"
#include "io/safetensors.h"
#include "models/auto_model.h"
#include "temp_dir.h"

using namespace automodel;
using automodel::testing::error_of;
using namespace automodel::models;
using nlohmann::json;

namespace {
json tiny_config(const std::string& model_type = "llama") {
  return json{{"model_type", model_type},     {"vocab_size", 97},       {"hidden_size", 32},
              {"intermediate_size", 64},      {"num_hidden_layers", 2}, {"num_attention_heads", 4},
              {"num_key_value_heads", 2},     {"rms_norm_eps", 1e-5},   {"max_position_embeddings", 128},
              {"tie_word_embeddings", false}, {"eos_token_id", 2},      {"some_future_key", "kept"}};
}

}  // namespace

TEST(ModelConfig, LegacyAndTransformers5RopeKeysAgree) {
  json legacy = tiny_config();
  legacy["rope_theta"] = 500000.0;
  legacy["rope_scaling"] = {{"rope_type", "llama3"},
                            {"factor", 8.0},
                            {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0},
                            {"original_max_position_embeddings", 64}};
  json v5 = tiny_config();
  v5["rope_parameters"] = legacy["rope_scaling"];
  v5["rope_parameters"]["rope_theta"] = 500000.0;
  for (const json& j : {legacy, v5}) {
    ModelConfig c = ModelConfig::from_json(j, "test");
    EXPECT_EQ(c.rope.type, "llama3");
    EXPECT_EQ(c.rope.theta, 500000.0);
    EXPECT_EQ(c.rope.factor, 8.0);
    EXPECT_EQ(c.rope.original_max_position_embeddings, 64);
    EXPECT_EQ(c.head_dim, 8);
    EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  }
}

TEST(ModelConfig, MissingOrBadKeysAreClearErrors) {
  json j = tiny_config();
  j.erase("hidden_size");
  EXPECT_NE(error_of([&] { ModelConfig::from_json(j, "x/config.json"); }).find("hidden_size"), std::string::npos);
  j = tiny_config();
  j["num_key_value_heads"] = 3;
  EXPECT_NE(error_of([&] { ModelConfig::from_json(j, "x"); }).find("multiple of num_key_value_heads"),
            std::string::npos);
  j = tiny_config();
  j["rms_norm_eps"] = "small";
  EXPECT_NE(error_of([&] { ModelConfig::from_json(j, "x"); }).find("rms_norm_eps"), std::string::npos);
}

TEST(AutoModel, UnknownModelTypeListsTheSupportedOnes) {
  ModelConfig c = ModelConfig::from_json(tiny_config("bert_xyz"), "x");
  std::string msg = error_of([&] { AutoModelForCausalLM::from_config(c); });
  for (const char* t : {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3"})
    EXPECT_NE(msg.find(t), std::string::npos) << msg;
}

TEST(AutoModel, TrainablePatternsSelectParameters) {
  ModelConfig c = ModelConfig::from_json(tiny_config(), "x");
  LoadOptions opts;
  opts.trainable_patterns = {"model.layers.*.mlp.*"};
  auto model = AutoModelForCausalLM::from_config(c, opts);
  for (auto& [name, p] : model->named_parameters())
    EXPECT_EQ(p.requires_grad(), name.find(".mlp.") != std::string::npos) << name;
  opts.trainable_patterns = {"nothing.*"};
  EXPECT_NE(error_of([&] { AutoModelForCausalLM::from_config(c, opts); }).find("no parameter matches"),
            std::string::npos);
}

TEST(AutoModel, SaveAndLoadRoundTripKeepsLogitsAndUnknownKeys) {
  for (bool tied : {false, true}) {
    json j = tiny_config("qwen3");
    j["tie_word_embeddings"] = tied;
    auto model = AutoModelForCausalLM::from_config(ModelConfig::from_json(j, "x"), {}, 7);
    automodel::testing::TempDir dir;
    save_pretrained(*model, dir.str(), SaveOptions{4096});  // tiny shards: exercises the index
    auto loaded = AutoModelForCausalLM::from_pretrained(dir.str());
    EXPECT_EQ(loaded->config().raw["some_future_key"], "kept");
    Tensor ids = Tensor::from_vector<int64_t>({1, 5, 9, 3, 4, 2}, {1, 6});
    NoGradGuard no_grad;
    EXPECT_EQ(model->forward(ids).to_doubles(), loaded->forward(ids).to_doubles());
    io::ShardedReader reader(dir.str());
    EXPECT_TRUE(reader.sharded());
    EXPECT_EQ(reader.contains("lm_head.weight"), !tied);
  }
}

TEST(AutoModel, MissingAndMisshapenTensorsAreNamed) {
  auto model = AutoModelForCausalLM::from_config(ModelConfig::from_json(tiny_config(), "x"));
  automodel::testing::TempDir dir;
  save_pretrained(*model, dir.str());
  io::NamedTensors tensors = io::load_safetensors(dir / "model.safetensors");
  io::NamedTensors without, reshaped;
  for (auto& [name, t] : tensors) {
    if (name != "model.norm.weight") without.emplace_back(name, t);
    reshaped.emplace_back(name, name == "model.norm.weight" ? Tensor::ones({31}) : t);
  }
  io::save_safetensors(dir / "model.safetensors", without);
  EXPECT_NE(error_of([&] { AutoModelForCausalLM::from_pretrained(dir.str()); }).find("model.norm.weight"),
            std::string::npos);
  io::save_safetensors(dir / "model.safetensors", reshaped);
  std::string msg = error_of([&] { AutoModelForCausalLM::from_pretrained(dir.str()); });
  EXPECT_NE(msg.find("[31]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[32]"), std::string::npos) << msg;
}

TEST(AutoModel, KvCacheDecodingMatchesFullForward) {
  json j = tiny_config("gemma2");
  j["sliding_window"] = 3;
  j["attn_logit_softcapping"] = 20.0;
  j["final_logit_softcapping"] = 10.0;
  j["query_pre_attn_scalar"] = 16;
  auto model = AutoModelForCausalLM::from_config(ModelConfig::from_json(j, "x"), {}, 3);
  NoGradGuard no_grad;
  std::vector<int64_t> tokens = {3, 14, 15, 92, 65, 35, 89, 79};
  Tensor full = model->forward(Tensor::from_vector(tokens, {1, 8}));
  KVCache cache = model->make_cache(1, 8);
  ForwardOptions o;
  o.cache = &cache;
  Tensor prefix =
      model->forward(Tensor::from_vector(std::vector<int64_t>(tokens.begin(), tokens.begin() + 5), {1, 5}), o);
  std::vector<double> f = full.to_doubles(), p = prefix.to_doubles();
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(p[i], f[i], 1e-5);
  for (int64_t t = 5; t < 8; ++t) {
    std::vector<double> step =
        model->forward(Tensor::from_vector(std::vector<int64_t>{tokens[size_t(t)]}, {1, 1}), o).to_doubles();
    for (size_t v = 0; v < step.size(); ++v) EXPECT_NEAR(step[v], f[size_t(t) * 97 + v], 1e-5) << t;
  }
}
