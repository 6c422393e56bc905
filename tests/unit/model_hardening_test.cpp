// Bad model inputs are clear errors, one test per class: config.json values (types, sizes, divisibility, RoPE,
// token ids), size arithmetic that would overflow or cannot fit in memory, non-finite or integer-typed weights
// (model, checkpoint, optimizer state, adapters), adapter_config.json types, and non-finite logits in generation.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "components/checkpoint/model_io.h"
#include "components/checkpoint/state_io.h"
#include "components/peft/adapter_io.h"
#include "components/peft/lora.h"
#include "core/allocator.h"
#include "core/grad_node.h"
#include "core/rng.h"
#include "error_of.h"
#include "io/hf_dir.h"
#include "io/safetensors.h"
#include "models/auto_model.h"
#include "models/generate.h"
#include "ops/view.h"
#include "temp_dir.h"
#include "tiny_model_config.h"

using namespace automodel;
using namespace automodel::models;
using automodel::testing::error_of;
using automodel::testing::TempDir;
using automodel::testing::tiny_model_config;
using nlohmann::json;

namespace {

const std::string kSource = "/models/tiny/config.json";

// The message of loading `j` through from_json and the family ("" when it loads).
std::string config_error_of(const json& j) {
  return error_of([&] { AutoModelForCausalLM::from_config(ModelConfig::from_json(j, kSource)); });
}

// Every fragment appears in the message, and so does the file.
::testing::AssertionResult says(const std::string& msg, std::initializer_list<std::string> fragments) {
  if (msg.empty()) return ::testing::AssertionFailure() << "no error";
  for (const std::string& f : fragments)
    if (msg.find(f) == std::string::npos) return ::testing::AssertionFailure() << "no '" << f << "' in: " << msg;
  return ::testing::AssertionSuccess();
}

json with(json j, const std::string& key, const json& value) {
  j[key] = value;
  return j;
}

}  // namespace

// ---- config.json ------------------------------------------------------------------------------------------

TEST(ConfigValidation, SizesMustBePositiveIntegers) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "head_dim", "max_position_embeddings"}) {
    for (const json& bad : {json(0), json(-4)})
      EXPECT_TRUE(says(config_error_of(with(tiny_model_config(), key, bad)), {key, "positive integer", kSource}))
          << key;
    // 64.0 is refused as transformers' strict config classes refuse it: an integer key takes a JSON integer.
    for (const json& bad : {json(8.5), json(8.0), json(true), json("8")})
      EXPECT_TRUE(says(config_error_of(with(tiny_model_config(), key, bad)), {key, "must be an integer", kSource}))
          << key << " " << bad;
  }
  EXPECT_TRUE(says(config_error_of(with(tiny_model_config(), "hidden_size", json(uint64_t(1) << 63))), {"below 2^63"}));
  EXPECT_TRUE(says(config_error_of(with(tiny_model_config(), "hidden_size", 64.5)), {"64.5", "decimal point"}));
}

TEST(ConfigValidation, HeadCountsMustDivide) {
  EXPECT_TRUE(says(config_error_of(with(tiny_model_config(), "num_key_value_heads", 3)),
                   {"num_key_value_heads", "multiple of num_key_value_heads (3)"}));
  // hidden_size / num_attention_heads is the head size only when head_dim is absent.
  json j = with(tiny_model_config(), "hidden_size", 34);
  EXPECT_TRUE(says(config_error_of(j), {"hidden_size", "not a multiple of num_attention_heads", "head_dim"}));
  EXPECT_EQ(config_error_of(with(j, "head_dim", 8)), "");
}

TEST(ConfigValidation, RopeNeedsAnEvenRotaryDimension) {
  EXPECT_TRUE(
      says(config_error_of(with(tiny_model_config(), "head_dim", 7)), {"head_dim", "rotary dimension of 7", "even"}));
  json j = with(tiny_model_config(), "rope_parameters", {{"rope_type", "default"}, {"partial_rotary_factor", 0.375}});
  EXPECT_TRUE(says(config_error_of(j), {"rotary dimension of 3"}));  // 8 x 0.375
  for (double f : {0.0, -0.5, 1.5}) {
    j["rope_parameters"]["partial_rotary_factor"] = f;
    EXPECT_TRUE(says(config_error_of(j), {"rope_parameters.partial_rotary_factor", "(0, 1]"})) << f;
  }
}

TEST(ConfigValidation, NormEpsAndSoftcapsMustBeFiniteAndInRange) {
  for (const json& bad : {json(0), json(-1e-6)})
    EXPECT_TRUE(
        says(config_error_of(with(tiny_model_config(), "rms_norm_eps", bad)), {"rms_norm_eps", "positive finite"}));
  EXPECT_TRUE(
      says(config_error_of(with(tiny_model_config(), "rms_norm_eps", true)), {"rms_norm_eps", "must be a number"}));
  for (const char* key : {"attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar"})
    EXPECT_TRUE(says(config_error_of(with(tiny_model_config("gemma2"), key, -1.0)), {key, "non-negative"})) << key;
}

TEST(ConfigValidation, RopeParametersAreChecked) {
  auto rope = [](json params) { return with(tiny_model_config(), "rope_parameters", std::move(params)); };
  EXPECT_TRUE(says(config_error_of(rope({{"rope_type", "default"}, {"rope_theta", 0}})), {"rope_theta", "positive"}));
  EXPECT_TRUE(says(config_error_of(with(tiny_model_config(), "rope_theta", -1.0)), {"'rope_theta'", "positive"}));
  EXPECT_TRUE(
      says(config_error_of(rope({{"rope_type", "linear"}, {"factor", 0}})), {"rope_parameters.factor", "positive"}));
  EXPECT_TRUE(says(config_error_of(rope({{"rope_type", "proportional"}, {"factor", 4.0}})),
                   {"rope_parameters.rope_type", "'proportional' is not supported", "longrope", "yarn"}));
  EXPECT_TRUE(says(config_error_of(rope({{"rope_type", "yarn"}, {"factor", 4.0}, {"beta_slow", -1.0}})),
                   {"rope_parameters.beta_slow", "positive"}));
  EXPECT_TRUE(says(config_error_of(rope({{"rope_type", "yarn"}, {"factor", 0.0}})), {"rope_parameters.factor"}));
  EXPECT_TRUE(says(config_error_of(rope({{"rope_type", "yarn"}, {"factor", 4.0}, {"truncate", "yes"}})),
                   {"rope_parameters.truncate"}));
  // legacy rope_scaling keys are named as such
  EXPECT_TRUE(says(config_error_of(with(tiny_model_config(), "rope_scaling", {{"type", "dynamic"}, {"factor", -2.0}})),
                   {"rope_scaling.factor"}));
  json llama3 = {{"rope_type", "llama3"},
                 {"factor", 8.0},
                 {"low_freq_factor", 4.0},
                 {"high_freq_factor", 1.0},
                 {"original_max_position_embeddings", 64}};
  EXPECT_TRUE(says(config_error_of(rope(llama3)), {"high_freq_factor", "greater than low_freq_factor"}));
  llama3["low_freq_factor"] = 0.0;
  EXPECT_TRUE(says(config_error_of(rope(llama3)), {"low_freq_factor", "positive"}));
  llama3["low_freq_factor"] = 1.0;
  llama3["high_freq_factor"] = 4.0;
  llama3["original_max_position_embeddings"] = 0;
  EXPECT_TRUE(says(config_error_of(rope(llama3)), {"original_max_position_embeddings", "positive"}));
  // longrope: rotary_dim / 2 = 4 factors each, all positive.
  json longrope = {{"rope_type", "longrope"},
                   {"short_factor", {1.0, 1.0, 1.0}},
                   {"long_factor", {1.0, 2.0, 3.0, 4.0}},
                   {"original_max_position_embeddings", 32}};
  EXPECT_TRUE(says(config_error_of(with(rope(longrope), "model_type", "phi3")),
                   {"rope_parameters.short_factor", "has 3 entries", "rotary_dim / 2 = 4"}));
  longrope["short_factor"] = {1.0, 0.0, 1.0, 1.0};
  EXPECT_TRUE(says(config_error_of(with(rope(longrope), "model_type", "phi3")), {"short_factor[1]", "positive"}));
  longrope["short_factor"] = {1.0, "x", 1.0, 1.0};
  EXPECT_TRUE(says(config_error_of(with(rope(longrope), "model_type", "phi3")), {"short_factor[1]", "a number"}));
  longrope["short_factor"] = {1.0, 1.0, 1.0, 1.0};
  EXPECT_EQ(config_error_of(with(rope(longrope), "model_type", "phi3")), "");
}

TEST(ConfigValidation, WindowsAndLayerTypes) {
  for (const char* family : {"mistral", "phi3", "gemma2"})
    EXPECT_TRUE(
        says(config_error_of(with(tiny_model_config(family), "sliding_window", 0)), {"sliding_window", "positive"}))
        << family;
  json qwen = with(with(tiny_model_config("qwen2"), "use_sliding_window", true), "sliding_window", -8);
  EXPECT_TRUE(says(config_error_of(qwen), {"sliding_window"}));
  EXPECT_EQ(config_error_of(with(tiny_model_config("mistral"), "sliding_window", nullptr)),
            "");  // null: full attention
  json gemma2 = with(tiny_model_config("gemma2"), "layer_types", {"sliding_attention"});
  EXPECT_TRUE(says(config_error_of(gemma2), {"layer_types", "has 1 entries for num_hidden_layers 2"}));
  gemma2["layer_types"] = {"sliding_attention", "chunked_attention"};
  EXPECT_TRUE(says(config_error_of(gemma2), {"layer_types[1]", "chunked_attention"}));
  gemma2["layer_types"] = {"sliding_attention", 3};
  EXPECT_TRUE(says(config_error_of(gemma2), {"layer_types[1]"}));
  gemma2["layer_types"] = {"sliding_attention", "full_attention"};
  ModelConfig c = ModelConfig::from_json(gemma2, kSource);
  AutoModelForCausalLM::from_config(c);
  EXPECT_EQ(AutoModelForCausalLM::from_config(c)->config().layer_windows, (std::vector<int64_t>{4096, 0}));
}

TEST(ConfigValidation, ActivationsAreChecked) {
  EXPECT_TRUE(says(config_error_of(with(tiny_model_config("qwen2"), "hidden_act", "gelu")), {"hidden_act", "'gelu'"}));
  EXPECT_TRUE(
      says(config_error_of(with(tiny_model_config("gemma"), "hidden_activation", "relu")), {"hidden_activation"}));
  EXPECT_TRUE(says(config_error_of(with(tiny_model_config(), "hidden_act", 3)), {"hidden_act", "a string"}));
}

TEST(ConfigValidation, TokenIdsOutsideTheVocabulary) {
  // transformers' nn.Embedding(padding_idx) refuses a pad id beyond the vocabulary.
  for (int64_t pad : {97, -98})
    EXPECT_TRUE(says(config_error_of(with(tiny_model_config(), "pad_token_id", pad)), {"pad_token_id", "[0, 97)"}))
        << pad;
  // Hub configs ship pad_token_id -1 and eos ids beyond vocab_size: a warning, as in transformers.
  EXPECT_EQ(config_error_of(with(tiny_model_config(), "pad_token_id", -1)), "");
  EXPECT_EQ(config_error_of(with(tiny_model_config(), "eos_token_id", json({2, 500}))), "");
  EXPECT_EQ(config_error_of(with(tiny_model_config(), "bos_token_id", 1000)), "");
  EXPECT_TRUE(says(config_error_of(with(tiny_model_config(), "eos_token_id", json({2, "</s>"}))), {"eos_token_id[1]"}));
  EXPECT_TRUE(says(config_error_of(with(tiny_model_config(), "bos_token_id", 1.5)), {"bos_token_id", "an integer"}));
}

// ---- size arithmetic --------------------------------------------------------------------------------------

TEST(SizeOverflow, ConfigSizesThatOverflowNameTheKey) {
  const int64_t huge = int64_t(1) << 62;
  EXPECT_TRUE(says(config_error_of(with(tiny_model_config(), "vocab_size", huge)),
                   {"'vocab_size'", std::to_string(huge), "overflows", "model.embed_tokens.weight", kSource}));
  EXPECT_TRUE(says(config_error_of(with(tiny_model_config(), "intermediate_size", huge)),
                   {"'intermediate_size'", "overflows", "decoder layers"}));
  EXPECT_TRUE(says(config_error_of(with(tiny_model_config(), "num_hidden_layers", huge)), {"'num_hidden_layers'"}));
}

TEST(SizeOverflow, ConfigSizesBeyondPhysicalMemoryNameTheKeyAndBytes) {
  const int64_t vocab = int64_t(1) << 44;  // x hidden 32 x 2 bytes = 1 PiB: beyond any machine this runs on
  ASSERT_LT(physical_memory_bytes(), size_t(vocab) * 32 * 2);
  const std::string msg = config_error_of(with(tiny_model_config(), "vocab_size", vocab));
  EXPECT_TRUE(says(msg, {"'vocab_size'", "physical memory", "bytes", "model.embed_tokens.weight", kSource}));
  EXPECT_EQ(msg.find("batch"), std::string::npos) << msg;
  // Loading in f32 needs twice the bytes of the bf16 bound from_json checks.
  ModelConfig c = ModelConfig::from_json(tiny_model_config(), kSource);
  c.num_hidden_layers = int64_t(physical_memory_bytes() / 4 / 5000);  // ~9.5k parameters a layer
  c.layer_windows.assign(size_t(c.num_hidden_layers), 0);
  EXPECT_TRUE(says(error_of([&] { AutoModelForCausalLM::from_config(c); }), {"num_hidden_layers", "in float32"}));
}

TEST(SizeOverflow, ParameterCountBoundIsCloseToTheExactCount) {
  for (const char* family : {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3"}) {
    json j = with(tiny_model_config(family), "attention_bias", true);
    ModelConfig c = ModelConfig::from_json(j, kSource);
    const int64_t exact = AutoModelForCausalLM::from_config(c)->num_parameters();
    EXPECT_GE(parameter_count_bound(c), exact) << family;
    EXPECT_LE(parameter_count_bound(c), exact + 97 * 32 + 2 * (6 * 32 + 2 * 64 + 8 * 8)) << family;
  }
}

// ---- non-finite and integer tensors -----------------------------------------------------------------------

TEST(NonFinite, FindsNanAndInfInEveryFloatDtype) {
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    const int64_t n = 70003;
    Tensor t = Tensor::zeros({n}, dt);
    EXPECT_EQ(io::find_non_finite(t).count, 0);
    ops::copy_into(ops::narrow(t, 0, n - 2, 1), Tensor::full({1}, -INFINITY, dt));
    ops::copy_into(ops::narrow(t, 0, 60000, 1), Tensor::full({1}, NAN, dt));
    io::NonFinite bad = io::find_non_finite(t);
    EXPECT_EQ(bad.count, 2) << dtype_name(dt);
    EXPECT_EQ(bad.first, 60000) << dtype_name(dt);
    EXPECT_TRUE(std::isnan(bad.first_value)) << dtype_name(dt);
    EXPECT_EQ(io::find_non_finite(ops::narrow(t, 0, n - 2, 2)).first_value, -INFINITY) << dtype_name(dt);
    // The largest finite values are not flagged.
    EXPECT_EQ(io::find_non_finite(Tensor::full({3}, dt == DType::f16 ? 65504.0 : 3.0e38, dt)).count, 0);
  }
  EXPECT_EQ(io::find_non_finite(Tensor::full({3}, -1, DType::i64)).count, 0);
  // Large enough to be split across threads: the first non-finite element of all chunks is reported.
  const int64_t n = (int64_t(1) << 23) + 5;
  Tensor big = Tensor::zeros({n});
  ops::copy_into(ops::narrow(big, 0, n - 2, 1), Tensor::full({1}, INFINITY));
  ops::copy_into(ops::narrow(big, 0, 100, 1), Tensor::full({1}, NAN));
  io::NonFinite bad = io::find_non_finite(big);
  EXPECT_EQ(bad.count, 2);
  EXPECT_EQ(bad.first, 100);
}

TEST(NonFinite, WeightsAreFloatAndFiniteOrNamed) {
  TempDir dir;
  auto model = AutoModelForCausalLM::from_config(ModelConfig::from_json(tiny_model_config(), kSource));
  save_pretrained(*model, dir.str());
  const std::string file = dir / "model.safetensors";
  const io::NamedTensors clean = io::load_safetensors(file);
  auto rewrite = [&](const std::string& target, const Tensor& value) {
    io::NamedTensors out;
    for (auto& [name, t] : clean) out.emplace_back(name, name == target ? value : ops::clone(t));
    io::save_safetensors(file, out);
  };
  Tensor norm = Tensor::ones({32});
  ops::copy_into(ops::narrow(norm, 0, 5, 1), Tensor::full({1}, NAN));
  rewrite("model.layers.1.input_layernorm.weight", norm);
  EXPECT_TRUE(says(error_of([&] { AutoModelForCausalLM::from_pretrained(dir.str()); }),
                   {"model.layers.1.input_layernorm.weight", file, "1 non-finite", "element 5 = nan"}));
  // On resume (load_model_weights) too, and nothing is written into the live model.
  const double before = model->named_parameters()[0].second.to_doubles()[0];
  EXPECT_TRUE(says(error_of([&] { checkpoint::load_model_weights(*model, dir.str()); }),
                   {"model.layers.1.input_layernorm.weight", "non-finite"}));
  EXPECT_EQ(model->named_parameters()[0].second.to_doubles()[0], before);
  // Finite in the file, infinite in bf16: named as a conversion overflow.
  rewrite("model.layers.1.input_layernorm.weight", Tensor::full({32}, 3.399e38));
  LoadOptions bf16;
  bf16.dtype = DType::bf16;
  EXPECT_TRUE(says(error_of([&] { AutoModelForCausalLM::from_pretrained(dir.str(), bf16); }),
                   {"after converting F32 to bf16", "--dtype f32"}));
  // Integer tensors are not silently converted to float weights.
  rewrite("model.norm.weight", Tensor::full({32}, 1, DType::i32));
  EXPECT_TRUE(says(error_of([&] { AutoModelForCausalLM::from_pretrained(dir.str()); }),
                   {"model.norm.weight", "I32", "integer type", file}));
}

TEST(NonFinite, OptimizerStateOnRestore) {
  TempDir dir;
  Tensor exp_avg = Tensor::zeros({4});
  ops::copy_into(ops::narrow(exp_avg, 0, 2, 1), Tensor::full({1}, INFINITY));
  checkpoint::save_optimizer_state(dir.str(), {{"w.exp_avg", exp_avg}, {"w.codes", Tensor::zeros({4}, DType::i32)}},
                                   {{"w", 3}});
  std::map<std::string, Tensor> state = {{"w.exp_avg", Tensor::zeros({4})},
                                         {"w.codes", Tensor::zeros({4}, DType::i32)}};
  EXPECT_TRUE(says(error_of([&] { checkpoint::load_optimizer_state(dir.str(), state); }),
                   {"w.exp_avg", "optimizer.safetensors", "element 2 = inf", "earlier checkpoint"}));
  EXPECT_EQ(state["w.exp_avg"].to_doubles(), std::vector<double>(4, 0.0));  // nothing written
}

// ---- adapters ---------------------------------------------------------------------------------------------

namespace {

// A saved adapter for a fresh tiny llama, in `dir`.
std::unique_ptr<LanguageModel> adapter_fixture(const TempDir& dir) {
  auto model = AutoModelForCausalLM::from_config(ModelConfig::from_json(tiny_model_config(), kSource));
  peft::PeftConfig c;
  c.dim = 2;
  peft::apply_lora(*model, c, 1);
  peft::save_adapter(*model, dir.str(), c);
  return AutoModelForCausalLM::from_config(ModelConfig::from_json(tiny_model_config(), kSource));
}

std::string adapter_error_with(const TempDir& dir, LanguageModel& model, const std::string& key, const json& value) {
  const json original = io::read_json_file(dir / "adapter_config.json");
  json cfg = original;
  cfg[key] = value;
  io::write_file_atomic(dir / "adapter_config.json", cfg.dump());
  std::string msg = error_of([&] { peft::load_adapter(model, dir.str()); });
  io::write_file_atomic(dir / "adapter_config.json", original.dump());
  return msg;
}

}  // namespace

TEST(AdapterConfig, EveryFieldIsTyped) {
  TempDir dir;
  auto model = adapter_fixture(dir);
  const std::string file = dir / "adapter_config.json";
  EXPECT_TRUE(says(adapter_error_with(dir, *model, "lora_alpha", "thirty-two"),
                   {"'lora_alpha'", "a finite number", "\"thirty-two\"", file}));
  EXPECT_TRUE(says(adapter_error_with(dir, *model, "lora_alpha", true), {"'lora_alpha'"}));
  for (const json& r : {json(0), json(-2), json(2.0), json("2")})
    EXPECT_TRUE(says(adapter_error_with(dir, *model, "r", r), {"'r'", "positive integer"})) << r;
  EXPECT_TRUE(says(adapter_error_with(dir, *model, "lora_dropout", 1.5), {"'lora_dropout'", "[0, 1)"}));
  EXPECT_TRUE(says(adapter_error_with(dir, *model, "use_rslora", "yes"), {"'use_rslora'", "true or false"}));
  EXPECT_TRUE(says(adapter_error_with(dir, *model, "use_dora", 1), {"'use_dora'", "true or false"}));
  EXPECT_TRUE(says(adapter_error_with(dir, *model, "bias", false), {"'bias'", "a string"}));
  EXPECT_TRUE(says(adapter_error_with(dir, *model, "peft_type", 3), {"'peft_type'", "a string"}));
  EXPECT_TRUE(
      says(adapter_error_with(dir, *model, "base_model_name_or_path", json::array()), {"'base_model_name_or_path'"}));
  EXPECT_TRUE(says(adapter_error_with(dir, *model, "modules_to_save", "lm_head"), {"'modules_to_save'"}));
  EXPECT_TRUE(says(adapter_error_with(dir, *model, "rank_pattern", {{"q_proj", "four"}}), {"rank_pattern.q_proj"}));
  EXPECT_TRUE(says(adapter_error_with(dir, *model, "rank_pattern", {{"(q_proj", 2}}),
                   {"rank_pattern", "'(q_proj'", "regular expression"}));
  EXPECT_TRUE(says(adapter_error_with(dir, *model, "alpha_pattern", {{"q_proj", nullptr}}), {"alpha_pattern.q_proj"}));
  EXPECT_TRUE(says(adapter_error_with(dir, *model, "alpha_pattern", json::array()), {"'alpha_pattern'"}));
  EXPECT_EQ(error_of([&] { peft::load_adapter(*model, dir.str()); }), "");
}

TEST(AdapterConfig, NonFiniteOrIntegerAdapterTensorsAreRefused) {
  TempDir dir;
  auto model = adapter_fixture(dir);
  const std::string file = dir / "adapter_model.safetensors";
  io::NamedTensors tensors = io::load_safetensors(file);
  const std::string target = "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight";
  io::NamedTensors bad;
  for (auto& [name, t] : tensors) bad.emplace_back(name, name == target ? Tensor::full(t.shape(), NAN) : ops::clone(t));
  io::save_safetensors(file, bad);
  EXPECT_TRUE(says(error_of([&] { peft::load_adapter(*model, dir.str()); }), {target, file, "non-finite"}));
  bad.clear();
  for (auto& [name, t] : tensors)
    bad.emplace_back(name, name == target ? Tensor::zeros(t.shape(), DType::i64) : ops::clone(t));
  io::save_safetensors(file, bad);
  EXPECT_TRUE(says(error_of([&] { peft::load_adapter(*model, dir.str()); }), {target, "I64", "integer type"}));
  EXPECT_TRUE(peft::lora_modules(*model).empty());  // nothing attached
}

// ---- generation -------------------------------------------------------------------------------------------

TEST(GenerateHardening, NonFiniteLogitsAreAnError) {
  auto model = AutoModelForCausalLM::from_config(ModelConfig::from_json(tiny_model_config(), kSource), {}, 1);
  GenerationConfig gen;
  gen.max_new_tokens = 4;
  EXPECT_EQ(generate(*model, {1, 2, 3}, gen).size(), 4u);
  // Finite weights whose products overflow f32.
  for (auto& [name, p] : model->named_parameters()) {
    if (name == "lm_head.weight") ops::copy_into(p, Tensor::full(p.shape(), 3e38));
    if (name == "model.norm.weight") ops::copy_into(p, Tensor::full(p.shape(), 1000.0));
  }
  EXPECT_TRUE(says(error_of([&] { generate(*model, {1, 2, 3}, gen); }), {"non-finite logit", "position 2"}));
  EXPECT_TRUE(says(error_of([&] { sequence_logprobs(*model, {1, 2, 3}); }), {"non-finite logit", "logprobs"}));
}

TEST(GenerateHardening, KvCacheBeyondMemoryIsRefused) {
  auto model = AutoModelForCausalLM::from_config(ModelConfig::from_json(tiny_model_config(), kSource));
  GenerationConfig gen;
  for (int64_t n : {int64_t(1) << 40, std::numeric_limits<int64_t>::max()}) {
    gen.max_new_tokens = n;
    EXPECT_TRUE(says(error_of([&] { generate(*model, {1}, gen); }), {"KV cache", "physical memory", "max_new_tokens"}))
        << n;
  }
}
