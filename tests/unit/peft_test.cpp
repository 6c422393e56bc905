// components/peft: config validation (bad configs are clear errors), NeMo's module matching,
// apply_lora (frozen base, names, counts, init), adapter save / load round trip, merge.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "components/peft/adapter_io.h"
#include "components/peft/lora.h"
#include "components/peft/peft_config.h"
#include "core/rng.h"
#include "error_of.h"
#include "io/hf_dir.h"
#include "io/safetensors.h"
#include "models/auto_model.h"
#include "ops/view.h"
#include "temp_dir.h"

using namespace automodel;
using automodel::testing::error_of;
using automodel::testing::TempDir;

namespace {

std::unique_ptr<models::LanguageModel> tiny_model(uint64_t seed = 0) {
  nlohmann::json j = {{"model_type", "llama"},       {"vocab_size", 61},       {"hidden_size", 24},
                      {"intermediate_size", 40},     {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},    {"rms_norm_eps", 1e-5},   {"max_position_embeddings", 64},
                      {"tie_word_embeddings", false}};
  return models::AutoModelForCausalLM::from_config(models::ModelConfig::from_json(j, "test"), {}, seed);
}

Tensor ids() { return Tensor::from_vector(std::vector<int64_t>{1, 5, 9, 33, 7, 2, 60, 11}, {2, 4}); }

double max_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_doubles(), y = b.to_doubles();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

}  // namespace

TEST(PeftConfig, BadConfigsAreClearErrors) {
  peft::PeftConfig c;
  c.target_modules = {"*_proj"};
  c.exclude_modules = {"*.o_proj"};
  EXPECT_NE(error_of([&] { peft::validate(c); }).find("mutually exclusive"), std::string::npos);
  c = {};
  c.match_all_linear = true;
  c.target_modules = {"*_proj"};
  EXPECT_NE(error_of([&] { peft::validate(c); }).find("match_all_linear"), std::string::npos);
  c = {};
  c.dim = 0;
  EXPECT_NE(error_of([&] { peft::validate(c); }).find("rank"), std::string::npos);
  c = {};
  c.alpha = -1;
  EXPECT_NE(error_of([&] { peft::validate(c); }).find("alpha"), std::string::npos);
  c = {};
  c.dropout_position = "middle";
  EXPECT_NE(error_of([&] { peft::validate(c); }).find("dropout_position"), std::string::npos);
  c = {};
  c.lora_A_init = "zeros";
  EXPECT_NE(error_of([&] { peft::validate(c); }).find("lora_A_init"), std::string::npos);
  c = {};
  c.dropout = 1.0;
  EXPECT_NE(error_of([&] { peft::validate(c); }).find("dropout"), std::string::npos);
  EXPECT_NE(error_of([] { peft::parse_lora_dtype("int8"); }).find("lora_dtype"), std::string::npos);
  EXPECT_EQ(peft::parse_lora_dtype("torch.bfloat16"), DType::bf16);
}

TEST(PeftConfig, WildcardsAreAnchoredAsNeMo) {
  EXPECT_TRUE(peft::wildcard_match("*_proj", "model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(peft::wildcard_match("*_proj", "model.layers.0.self_attn.q_proj.lora_A"));
  EXPECT_TRUE(peft::wildcard_match("*.layers.0.*.q_proj", "model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(peft::wildcard_match("*.layers.0.*.q_proj", "model.layers.1.self_attn.q_proj"));
  EXPECT_FALSE(peft::wildcard_match("q_proj", "model.layers.0.self_attn.q_proj"));
  peft::PeftConfig c;  // nothing set: '*_proj'
  EXPECT_TRUE(peft::selects(c, "model.layers.0.mlp.up_proj", "model.layers.0.mlp.up_proj"));
  EXPECT_FALSE(peft::selects(c, "lm_head", "lm_head"));
  c.exclude_modules = {"*.mlp.*"};
  EXPECT_TRUE(peft::selects(c, "lm_head", "lm_head"));
  EXPECT_FALSE(peft::selects(c, "model.layers.0.mlp.up_proj", "model.layers.0.mlp.up_proj"));
  EXPECT_DOUBLE_EQ(c.scale(), 4.0);
  c.use_rslora = true;
  EXPECT_DOUBLE_EQ(c.scale(), 32.0 / std::sqrt(8.0));
}

// Patterns written against transformers' module paths (NeMo's) select an image-text model's layers as our names do.
TEST(PeftConfig, PatternsMatchOurNameOrTheTransformersModulePath) {
  const std::string ours = "vision_tower.encoder.layers.0.mlp.fc1", hf = "model.vision_model.encoder.layers.0.mlp.fc1";
  peft::PeftConfig c;
  c.exclude_modules = {"*vision_model*"};
  EXPECT_FALSE(peft::selects(c, ours, hf));
  c.exclude_modules = {"*vision_tower*"};
  EXPECT_FALSE(peft::selects(c, ours, hf));
  c.exclude_modules = {"*lm_head*"};
  EXPECT_TRUE(peft::selects(c, ours, hf));
  c.exclude_modules.clear();
  c.target_modules = {"model.vision_model.*.fc1"};
  EXPECT_TRUE(peft::selects(c, ours, hf));
  EXPECT_FALSE(peft::selects(c, "language_model.model.layers.0.mlp.up_proj", "model.text_model.layers.0.mlp.up_proj"));
}

TEST(ApplyLora, FreezesBaseNamesAdaptersAndCountsParameters) {
  auto model = tiny_model();
  peft::PeftConfig c;
  c.target_modules = {"*.self_attn.q_proj", "*.mlp.down_proj"};
  c.dim = 3;
  auto names = peft::apply_lora(*model, c, 5);
  EXPECT_EQ(names, (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj",
                                             "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj"}));
  std::vector<std::string> trainable;
  for (auto& [n, p] : model->named_parameters())
    if (p.requires_grad()) trainable.push_back(n);
  EXPECT_EQ(trainable.size(), 8u);
  EXPECT_EQ(trainable[0], "model.layers.0.self_attn.q_proj.lora_A.weight");
  // q_proj 24 -> 24, down_proj 40 -> 24, rank 3: 2 * (3*24 + 24*3 + 3*40 + 24*3).
  EXPECT_EQ(model->num_parameters(true), 2 * (3 * 24 + 24 * 3 + 3 * 40 + 24 * 3));
  // B starts at zero: the model's output is the base's.
  auto base = tiny_model();
  EXPECT_EQ(max_diff(model->forward(ids()), base->forward(ids())), 0.0);
  // xavier_normal A: std sqrt(2 / (in + r)).
  Tensor a = model->parameter("model.layers.0.mlp.down_proj.lora_A.weight");
  double ss = 0;
  for (double v : a.to_doubles()) ss += v * v;
  EXPECT_NEAR(std::sqrt(ss / double(a.numel())), std::sqrt(2.0 / 43.0), 0.03);
  EXPECT_NE(error_of([&] { peft::apply_lora(*model, c); }).find("already has"), std::string::npos);
}

TEST(ApplyLora, SelectionErrors) {
  auto model = tiny_model();
  peft::PeftConfig c;
  c.target_modules = {"q_proj"};  // anchored: matches no full name
  std::string e = error_of([&] { peft::apply_lora(*model, c); });
  EXPECT_NE(e.find("matches no linear layer"), std::string::npos) << e;
  EXPECT_NE(e.find("model.layers.0.self_attn.q_proj"), std::string::npos) << e;
  c = {};
  c.match_all_linear = true;  // includes lm_head, which LanguageModel multiplies directly
  EXPECT_NE(error_of([&] { peft::apply_lora(*model, c); }).find("lm_head"), std::string::npos);
  c = {};
  c.dim = -2;
  EXPECT_NE(error_of([&] { peft::apply_lora(*model, c); }).find("rank"), std::string::npos);
}

TEST(AdapterIO, SaveLoadRoundTripAndMerge) {
  TempDir dir;
  auto model = tiny_model();
  peft::PeftConfig c;
  c.dim = 2;
  c.alpha = 6;
  auto names = peft::apply_lora(*model, c, 1);
  Generator gen(3);
  for (auto& [n, lin] : peft::lora_modules(*model)) ops::copy_into(lin->lora_B(), randn(lin->lora_B().shape(), gen));
  Tensor expected = model->forward(ids());
  peft::save_adapter(*model, dir.str(), c, "tiny");
  nlohmann::json cfg = io::read_json_file(dir / "adapter_config.json");
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["r"], 2);
  EXPECT_EQ(cfg["lora_alpha"], 6);
  EXPECT_EQ(cfg["base_model_name_or_path"], "tiny");
  EXPECT_EQ(cfg["target_modules"],
            nlohmann::json({"down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"}));
  io::SafetensorsReader reader(dir / "adapter_model.safetensors");
  EXPECT_TRUE(reader.contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
  EXPECT_EQ(reader.info("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight").shape, Shape({24, 2}));

  auto fresh = tiny_model();
  auto loaded = peft::load_adapter(*fresh, dir.str());
  EXPECT_EQ(loaded.modules, names);
  EXPECT_EQ(loaded.config.dim, 2);
  EXPECT_EQ(fresh->num_parameters(true), model->num_parameters(true));
  EXPECT_LE(max_diff(fresh->forward(ids()), expected), 1e-6);

  peft::merge_lora(*fresh);
  EXPECT_TRUE(peft::lora_modules(*fresh).empty());
  EXPECT_LE(max_diff(fresh->forward(ids()), expected), 1e-5);
}

TEST(AdapterIO, LoadErrors) {
  TempDir dir;
  auto model = tiny_model();
  EXPECT_NE(error_of([&] { peft::load_adapter(*model, dir.str()); }).find("adapter_config.json"), std::string::npos);
  EXPECT_NE(error_of([&] { peft::save_adapter(*model, dir.str(), {}); }).find("no LoRA adapter"), std::string::npos);
  peft::PeftConfig c;
  peft::apply_lora(*model, c);
  peft::save_adapter(*model, dir.str(), c);
  nlohmann::json cfg = io::read_json_file(dir / "adapter_config.json");
  cfg["use_dora"] = true;
  io::write_file_atomic(dir / "adapter_config.json", cfg.dump());
  auto fresh = tiny_model();
  EXPECT_NE(error_of([&] { peft::load_adapter(*fresh, dir.str()); }).find("DoRA"), std::string::npos);
  cfg["use_dora"] = false;
  cfg["r"] = 4;
  io::write_file_atomic(dir / "adapter_config.json", cfg.dump());
  EXPECT_NE(error_of([&] { peft::load_adapter(*fresh, dir.str()); }).find("rank"), std::string::npos);
  // An adapter for another architecture: a module this model lacks.
  io::save_safetensors(dir / "adapter_model.safetensors",
                       {{"base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight", Tensor::zeros({8, 24})},
                        {"base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight", Tensor::zeros({24, 8})}});
  cfg["r"] = 8;
  io::write_file_atomic(dir / "adapter_config.json", cfg.dump());
  EXPECT_NE(error_of([&] { peft::load_adapter(*fresh, dir.str()); }).find("not a linear layer"), std::string::npos);
}

// Each check of load_adapter, from the files to the config's settings to each module's tensors, names what is wrong.
TEST(AdapterIO, EveryLoadCheckIsANamedError) {
  TempDir dir;
  auto model = tiny_model();
  peft::PeftConfig c;
  peft::apply_lora(*model, c);
  peft::save_adapter(*model, dir.str(), c);
  const nlohmann::json cfg = io::read_json_file(dir / "adapter_config.json");
  auto fresh = tiny_model();
  auto load_error = [&] { return error_of([&] { peft::load_adapter(*fresh, dir.str()); }); };
  auto has = [](const std::string& msg, const std::string& part) { return msg.find(part) != std::string::npos; };

  // The config: each setting this engine cannot run the same way.
  const std::vector<std::pair<std::pair<std::string, nlohmann::json>, std::string>> unsupported = {
      {{"peft_type", "IA3"}, "peft_type 'IA3' is not supported"},
      {{"lora_bias", true}, "lora_bias: true is not supported"},
      {{"fan_in_fan_out", true}, "fan_in_fan_out: true is not supported"},
      {{"bias", "all"}, "bias 'all' is not supported"},
      {{"layer_replication", {{0, 1}}}, "layer_replication is not supported"},
      {{"trainable_token_indices", {1, 2}}, "trainable_token_indices is not supported"},
  };
  for (const auto& [setting, message] : unsupported) {
    nlohmann::json bad = cfg;
    bad[setting.first] = setting.second;
    io::write_file_atomic(dir / "adapter_config.json", bad.dump());
    EXPECT_TRUE(has(load_error(), message)) << load_error();
  }
  io::write_file_atomic(dir / "adapter_config.json", cfg.dump());

  // The tensors: their names, both halves, the layer they adapt, their shapes.
  const std::string q = "base_model.model.model.layers.0.self_attn.q_proj.";
  auto with_tensors = [&](const io::NamedTensors& tensors) {
    io::save_safetensors(dir / "adapter_model.safetensors", tensors);
    return load_error();
  };
  EXPECT_TRUE(has(with_tensors({{q + "lora_A.bias", Tensor::zeros({8})}}),
                  "adapter tensor '" + q + "lora_A.bias' is not a LoRA A/B weight"));
  EXPECT_TRUE(has(with_tensors({}), "adapter holds no tensors"));
  EXPECT_TRUE(has(with_tensors({{q + "lora_A.weight", Tensor::zeros({8, 24})}}),
                  "adapter for 'model.layers.0.self_attn.q_proj' has only one of lora_A / lora_B"));
  EXPECT_TRUE(has(with_tensors({{"base_model.model.lm_head.lora_A.weight", Tensor::zeros({8, 24})},
                                {"base_model.model.lm_head.lora_B.weight", Tensor::zeros({61, 8})}}),
                  "adapter on 'lm_head' is not supported"));
  EXPECT_TRUE(
      has(with_tensors({{q + "lora_A.weight", Tensor::zeros({8, 24})}, {q + "lora_B.weight", Tensor::zeros({23, 8})}}),
          "do not fit weight"));
  const std::string rank =
      with_tensors({{q + "lora_A.weight", Tensor::zeros({4, 24})}, {q + "lora_B.weight", Tensor::zeros({24, 4})}});
  EXPECT_TRUE(has(rank, "adapter for 'model.layers.0.self_attn.q_proj' has rank 4 but the config says 8")) << rank;

  // The files: the weights missing, with a hint for peft's pickle format.
  std::filesystem::remove(dir / "adapter_model.safetensors");
  EXPECT_TRUE(has(load_error(), "no adapter_model.safetensors in")) << load_error();
  io::write_file_atomic(dir / "adapter_model.bin", "pickle");
  EXPECT_TRUE(has(load_error(), "adapter_model.bin (pickle) is not read")) << load_error();
}
