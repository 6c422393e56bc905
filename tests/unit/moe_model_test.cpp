// The mixture-of-experts families (qwen3_moe, mixtral): which layers have experts, the per-expert checkpoint layout
// they save and load, the load-balancing loss they report, and the config errors they give.
#include <gtest/gtest.h>

#include <fstream>

#include "components/checkpoint/model_io.h"
#include "components/peft/adapter_io.h"
#include "components/peft/lora.h"
#include "core/rng.h"
#include "error_of.h"
#include "io/safetensors.h"
#include "models/auto_model.h"
#include "models/decoder_layer.h"
#include "ops/binary.h"
#include "ops/view.h"
#include "temp_dir.h"
#include "tiny_model_config.h"

using namespace automodel;
using namespace automodel::models;
using automodel::testing::error_of;
using automodel::testing::TempDir;
using nlohmann::json;

namespace {

json moe_config(const std::string& model_type, json extra = json::object()) {
  json c = automodel::testing::tiny_model_config(model_type);
  c["num_hidden_layers"] = 3;
  c["num_local_experts"] = 4;
  c["num_experts_per_tok"] = 2;
  c["moe_intermediate_size"] = 16;
  c["output_router_logits"] = true;
  c["router_aux_loss_coef"] = 0.25;
  c.update(extra);
  return c;
}

std::unique_ptr<LanguageModel> model_of(const json& config, uint64_t seed = 3) {
  return AutoModelForCausalLM::from_config(ModelConfig::from_json(config, "config.json"), {}, seed);
}

bool has_param(const LanguageModel& m, const std::string& name) {
  for (const auto& [n, p] : m.named_parameters())
    if (n == name) return true;
  return false;
}

void expect_same_parameters(const LanguageModel& a, const LanguageModel& b) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].first, pb[i].first);
    EXPECT_EQ(pa[i].second.to_doubles(), pb[i].second.to_doubles()) << pa[i].first;
  }
}

Tensor token_ids() { return Tensor::from_vector(std::vector<int64_t>{3, 17, 0, 42, 96, 8, 1, 55}, {2, 4}); }

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(MoeFamilies, MlpOnlyLayersAndTheSparseStepDecideWhichLayersHaveExperts) {
  auto m = model_of(moe_config("qwen3_moe", {{"mlp_only_layers", {0}}, {"decoder_sparse_step", 1}}));
  EXPECT_TRUE(has_param(*m, "model.layers.0.mlp.gate_proj.weight"));
  EXPECT_FALSE(has_param(*m, "model.layers.0.mlp.gate.weight"));
  for (int l : {1, 2}) {
    const std::string p = "model.layers." + std::to_string(l) + ".mlp.";
    EXPECT_TRUE(has_param(*m, p + "gate.weight"));
    EXPECT_EQ(m->parameter(p + "experts.gate_up_proj").shape(), Shape({4, 32, 32}));
    EXPECT_EQ(m->parameter(p + "experts.down_proj").shape(), Shape({4, 32, 16}));
  }
  auto stepped = model_of(moe_config("qwen3_moe", {{"decoder_sparse_step", 2}}));
  EXPECT_FALSE(has_param(*stepped, "model.layers.0.mlp.gate.weight"));
  EXPECT_TRUE(has_param(*stepped, "model.layers.1.mlp.gate.weight"));
  EXPECT_FALSE(has_param(*stepped, "model.layers.2.mlp.gate.weight"));
  // Mixtral's experts use intermediate_size, in every layer.
  auto mixtral = model_of(moe_config("mixtral"));
  EXPECT_EQ(mixtral->parameter("model.layers.2.mlp.experts.gate_up_proj").shape(), Shape({4, 128, 32}));
}

TEST(MoeFamilies, SaveWritesPerExpertTensorsAndLoadingThemGivesTheSameModel) {
  for (auto [type, expert0, router] :
       {std::tuple{"qwen3_moe", "model.layers.1.mlp.experts.0.", "model.layers.1.mlp.gate.weight"},
        std::tuple{"mixtral", "model.layers.1.block_sparse_moe.experts.0.",
                   "model.layers.1.block_sparse_moe.gate.weight"}}) {
    SCOPED_TRACE(type);
    const bool qwen = std::string(type) == "qwen3_moe";
    TempDir dir;
    auto model = model_of(moe_config(type));
    save_pretrained(*model, dir.str());
    io::ShardedReader reader(dir.str());
    EXPECT_TRUE(reader.contains(router));
    EXPECT_FALSE(reader.contains("model.layers.1.mlp.experts.gate_up_proj"));
    const int64_t I = qwen ? 16 : 64;
    EXPECT_EQ(reader.info(std::string(expert0) + (qwen ? "gate_proj.weight" : "w1.weight")).shape, Shape({I, 32}));
    EXPECT_EQ(reader.info(std::string(expert0) + (qwen ? "up_proj.weight" : "w3.weight")).shape, Shape({I, 32}));
    EXPECT_EQ(reader.info(std::string(expert0) + (qwen ? "down_proj.weight" : "w2.weight")).shape, Shape({32, I}));
    // The gate rows of expert 3 come first in its grouped tensor, the up rows after them.
    Tensor grouped = model->parameter("model.layers.1.mlp.experts.gate_up_proj");
    std::string expert3 = expert0;
    expert3.replace(expert3.find(".0."), 3, ".3.");
    EXPECT_EQ(reader.get(expert3 + (qwen ? "up_proj.weight" : "w3.weight"), DType::f32).to_doubles(),
              ops::narrow(ops::narrow(grouped, 0, 3, 1), 1, I, I).to_doubles());

    expect_same_parameters(*model, *AutoModelForCausalLM::from_pretrained(dir.str()));
    auto resumed = model_of(moe_config(type), 4);
    checkpoint::load_model_weights(*resumed, dir.str());
    expect_same_parameters(*model, *resumed);
  }
}

TEST(MoeFamilies, AMissingExpertTensorIsNamed) {
  TempDir dir;
  auto model = model_of(moe_config("qwen3_moe"));
  save_pretrained(*model, dir.str());
  io::ShardedReader reader(dir.str());
  io::NamedTensors kept;
  for (auto& [name, tensor] : reader.load_all())
    if (name != "model.layers.2.mlp.experts.3.down_proj.weight") kept.emplace_back(name, ops::clone(tensor));
  io::save_safetensors(dir / "model.safetensors", kept);
  const std::string err = error_of([&] { AutoModelForCausalLM::from_pretrained(dir.str()); });
  EXPECT_TRUE(has(err, "model.layers.2.mlp.experts.3.down_proj.weight")) << err;
}

TEST(MoeFamilies, AUniformRouterGivesTheBalancedLossOfCoefTimesK) {
  // All router logits equal: every token picks experts 0 and 1 (ties keep the lower index), each with probability
  // 1/E: E * sum(fraction x probability) = E * (2 x 1/E) = k.
  auto model = model_of(moe_config("qwen3_moe"));
  for (auto& [name, p] : model->named_parameters())
    if (name.find("mlp.gate.weight") != std::string::npos) ops::copy_into(p, Tensor::zeros(p.shape()));
  DecoderOutput out = model->forward_hidden(token_ids());
  ASSERT_EQ(out.aux_losses.size(), 1u);
  EXPECT_NEAR(out.aux_losses[0].item(), 0.25 * 2, 1e-6);
}

TEST(MoeFamilies, NoAuxLossWithoutOutputRouterLogitsNorWhileDecoding) {
  auto quiet = model_of(moe_config("mixtral", {{"output_router_logits", false}}));
  EXPECT_TRUE(quiet->forward_hidden(token_ids()).aux_losses.empty());
  auto model = model_of(moe_config("mixtral"));
  KVCache cache = model->make_cache(2, 8);
  ForwardOptions options;
  options.cache = &cache;
  EXPECT_TRUE(model->forward_hidden(token_ids(), options).aux_losses.empty());
}

TEST(MoeFamilies, InconsistentExpertKeysAreConfigErrors) {
  for (auto [extra, key, what] : std::vector<std::tuple<json, std::string, std::string>>{
           {{{"num_experts_per_tok", 5}}, "num_experts_per_tok", "must not exceed num_local_experts (4)"},
           {{{"num_experts_per_tok", nullptr}}, "num_experts_per_tok", "needs a positive 'num_experts_per_tok'"},
           {{{"num_local_experts", -2}}, "num_local_experts", "must be a positive integer"},
           {{{"mlp_only_layers", 1}}, "mlp_only_layers", "must be a list of layer indices"},
           {{{"mlp_only_layers", {"a"}}}, "mlp_only_layers", "must hold integer layer indices"},
           {{{"decoder_sparse_step", 0}}, "decoder_sparse_step", "must be a positive integer"},
       }) {
    const std::string err = error_of([&] { model_of(moe_config("qwen3_moe", extra)); });
    EXPECT_TRUE(has(err, key) && has(err, what)) << extra.dump() << ": " << err;
  }
  json no_experts = moe_config("mixtral");
  no_experts.erase("num_local_experts");
  EXPECT_TRUE(has(error_of([&] { model_of(no_experts); }), "needs num_local_experts"));
  // Qwen's older files name the expert count num_experts.
  json older = moe_config("qwen3_moe");
  older.erase("num_local_experts");
  older["num_experts"] = 4;
  EXPECT_TRUE(has_param(*model_of(older), "model.layers.0.mlp.experts.gate_up_proj"));
}

peft::PeftConfig expert_lora_config(std::vector<std::string> parameters) {
  peft::PeftConfig c;
  c.target_parameters = std::move(parameters);
  c.dim = 2;
  c.alpha = 4;
  return c;
}

// Random B so that the adapters change the output.
void randomize_lora_b(LanguageModel& model) {
  Generator gen(11);
  for (auto& [name, p] : model.named_parameters())
    if (name.find("lora_B") != std::string::npos) ops::copy_into(p, ops::scale(randn(p.shape(), gen), 0.5));
}

TEST(MoeExpertLora, AdaptersAreNamedAsPeftNestsItsWrappers) {
  auto both = model_of(moe_config("qwen3_moe"));
  EXPECT_EQ(peft::apply_lora(*both, expert_lora_config({"gate_up_proj", "down_proj"})).size(), 3u);
  EXPECT_EQ(both->parameter("model.layers.0.mlp.experts.base_layer.lora_A.weight").shape(), Shape({4 * 2, 32}));
  EXPECT_EQ(both->parameter("model.layers.0.mlp.experts.base_layer.lora_B.weight").shape(), Shape({32, 2 * 4}));
  EXPECT_EQ(both->parameter("model.layers.0.mlp.experts.lora_A.weight").shape(), Shape({4 * 2, 16}));
  EXPECT_EQ(both->parameter("model.layers.0.mlp.experts.lora_B.weight").shape(), Shape({32, 2 * 4}));
  EXPECT_EQ(both->num_parameters(true), 3 * (8 * 32 + 32 * 8 + 8 * 16 + 32 * 8));
  auto down = model_of(moe_config("mixtral"));
  peft::apply_lora(*down, expert_lora_config({"down_proj"}));
  EXPECT_EQ(down->parameter("model.layers.2.mlp.experts.lora_A.weight").shape(), Shape({8, 64}));
  EXPECT_FALSE(has_param(*down, "model.layers.2.mlp.experts.base_layer.lora_A.weight"));
}

TEST(MoeExpertLora, SaveAndLoadRoundTripAndMergingGivesTheAdaptedOutput) {
  auto model = model_of(moe_config("qwen3_moe"));
  peft::PeftConfig config = expert_lora_config({"gate_up_proj", "down_proj"});
  config.target_modules = {"*.q_proj"};
  peft::apply_lora(*model, config);
  randomize_lora_b(*model);
  const std::vector<double> adapted = model->forward(token_ids()).to_doubles();
  TempDir dir;
  peft::save_adapter(*model, dir.str(), config);
  const json saved = json::parse(std::ifstream(dir / "adapter_config.json"));
  EXPECT_EQ(saved["target_parameters"], json({"gate_up_proj", "down_proj"}));

  auto loaded = model_of(moe_config("qwen3_moe"));
  peft::LoadedAdapter info = peft::load_adapter(*loaded, dir.str());
  EXPECT_EQ(info.config.target_parameters, (std::vector<std::string>{"gate_up_proj", "down_proj"}));
  const std::vector<double> reloaded = loaded->forward(token_ids()).to_doubles();
  ASSERT_EQ(reloaded.size(), adapted.size());
  for (size_t i = 0; i < adapted.size(); ++i) EXPECT_NEAR(reloaded[i], adapted[i], 1e-5 * (1 + std::abs(adapted[i])));

  peft::merge_lora(*loaded);
  EXPECT_FALSE(has_param(*loaded, "model.layers.0.mlp.experts.lora_A.weight"));
  const std::vector<double> merged = loaded->forward(token_ids()).to_doubles();
  for (size_t i = 0; i < adapted.size(); ++i) EXPECT_NEAR(merged[i], adapted[i], 1e-4 * (1 + std::abs(adapted[i])));
  auto base = model_of(moe_config("qwen3_moe"));
  const std::vector<double> plain = base->forward(token_ids()).to_doubles();
  double moved = 0;
  for (size_t i = 0; i < plain.size(); ++i) moved = std::max(moved, std::abs(plain[i] - adapted[i]));
  EXPECT_GT(moved, 1e-3);
}

TEST(MoeExpertLora, BadSelectionsAndAdaptersAreErrors) {
  auto dense = AutoModelForCausalLM::from_config(
      ModelConfig::from_json(automodel::testing::tiny_model_config("llama"), "config.json"), {}, 1);
  EXPECT_TRUE(has(error_of([&] { peft::apply_lora(*dense, expert_lora_config({"down_proj"})); }), "no MoE layer"));
  auto moe = model_of(moe_config("qwen3_moe"));
  EXPECT_TRUE(has(error_of([&] { peft::apply_lora(*moe, expert_lora_config({"up_proj"})); }),
                  "'up_proj' is not a grouped expert tensor"));
  peft::PeftConfig with_dropout = expert_lora_config({"down_proj"});
  with_dropout.dropout = 0.1;
  EXPECT_TRUE(has(error_of([&] { peft::apply_lora(*moe, with_dropout); }), "dropout must be 0 with target_parameters"));

  // An adapter saved from a model with other expert sizes names the tensor and the shapes.
  auto other = model_of(moe_config("qwen3_moe", {{"moe_intermediate_size", 8}}));
  peft::apply_lora(*other, expert_lora_config({"down_proj"}));
  TempDir dir;
  peft::save_adapter(*other, dir.str(), expert_lora_config({"down_proj"}));
  const std::string err = error_of([&] { peft::load_adapter(*moe, dir.str()); });
  EXPECT_TRUE(has(err, "model.layers.0.mlp.experts.down_proj") && has(err, "do not fit")) << err;
}

TEST(MoeFamilies, ConfigOverridesAtLoadAreAppliedAndChecked) {
  TempDir dir;
  save_pretrained(*model_of(moe_config("mixtral", {{"output_router_logits", false}})), dir.str());
  EXPECT_TRUE(AutoModelForCausalLM::from_pretrained(dir.str())->forward_hidden(token_ids()).aux_losses.empty());
  LoadOptions on;
  on.config_overrides = {{"output_router_logits", true}};
  auto model = AutoModelForCausalLM::from_pretrained(dir.str(), on);
  EXPECT_EQ(model->forward_hidden(token_ids()).aux_losses.size(), 1u);
  EXPECT_EQ(model->config().to_json()["output_router_logits"], true);
  LoadOptions bad;
  bad.config_overrides = {{"num_experts_per_tok", 9}};
  EXPECT_TRUE(has(error_of([&] { AutoModelForCausalLM::from_pretrained(dir.str(), bad); }), "num_experts_per_tok"));
}

}  // namespace

// transformers' MixtralSparseMoeBlock in training mode: hidden_states *= uniform(1 - j, 1 + j), before the router and
// the experts; in evaluation the input is as given.
TEST(MoeFamilies, MixtralRouterJitterScalesTheBlockInputInTrainingStepsOnly) {
  auto m = model_of(moe_config("mixtral", {{"router_jitter_noise", 0.1}}));
  const FeedForward* block = nullptr;
  for (const auto& [name, module] : m->named_modules())
    if (name == "model.layers.0.mlp") block = dynamic_cast<const FeedForward*>(module);
  ASSERT_NE(block, nullptr);
  Generator gen(11);
  const Tensor h = randn({2, 4, 32}, gen);
  LayerContext evaluation{}, training{};
  training.training = true;
  std::vector<Tensor> aux;
  const GeneratorState before = default_generator().state();
  const Tensor noise = rand_uniform({8, 32}, 0.9, 1.1);
  default_generator().set_state(before);
  const std::vector<double> jittered = block->forward(h, training, aux).to_doubles();
  EXPECT_EQ(jittered, block->forward(ops::mul(h, ops::reshape(noise, {2, 4, 32})), evaluation, aux).to_doubles());
  const std::vector<double> plain = block->forward(h, evaluation, aux).to_doubles();
  EXPECT_NE(jittered, plain);
  EXPECT_EQ(plain, block->forward(h, evaluation, aux).to_doubles());
  EXPECT_TRUE(has(error_of([] {
                    model_of(moe_config("mixtral", {{"router_jitter_noise", -0.1}}));
                  }),
                  "router_jitter_noise"));
}
