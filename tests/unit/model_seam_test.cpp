// models/ extension points: a family's layer factory and feed-forward block, inputs_embeds, auxiliary losses,
// and the state dict adapter that load and save pass through.
#include <gtest/gtest.h>

#include "autograd/engine.h"
#include "components/checkpoint/model_io.h"
#include "error_of.h"
#include "io/safetensors.h"
#include "models/auto_model.h"
#include "ops/binary.h"
#include "ops/concat.h"
#include "ops/reduce.h"
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

std::unique_ptr<LanguageModel> tiny_model(const std::string& model_type, uint64_t seed = 5) {
  return AutoModelForCausalLM::from_config(ModelConfig::from_json(tiny_model_config(model_type), "test"), {}, seed);
}

Tensor token_ids() { return Tensor::from_vector(std::vector<int64_t>{3, 17, 0, 42, 96, 8, 1, 55}, {2, 4}); }

// A gated MLP (same parameters as the stock one) whose output is doubled and which reports a scalar auxiliary loss,
// standing in for a mixture of experts and its router's load-balancing loss.
class DoubledMlpWithAuxLoss : public GatedMlp {
 public:
  using GatedMlp::GatedMlp;
  Tensor forward(const Tensor& h, const LayerContext& ctx, std::vector<Tensor>& aux_losses) const override {
    Tensor out = GatedMlp::forward(h, ctx, aux_losses);
    aux_losses.push_back(ops::mean(ops::mul(out, out)));
    return ops::scale(out, 2.0);
  }
};

// Llama's architecture with another feed-forward block in every layer, built through the layer factory.
void register_doubled_mlp_family() {
  register_family("seam_test_doubled_mlp", [](ModelConfig&) {
    return Architecture{.spec = {},
                        .make_layer = [](const ModelConfig& c, const DecoderSpec& spec, int64_t index, DType dtype) {
                          return std::make_shared<TransformerLayer>(
                              c, spec, index, dtype, std::make_shared<DoubledMlpWithAuxLoss>(c, spec, dtype));
                        }};
  });
}

// Llama's architecture stored as a multimodal checkpoint might: every tensor under "language_model.", and the
// embedding matrix as two row blocks (one of ours from several of theirs, as grouped experts will be).
class PrefixedSplitAdapter : public StateDictAdapter {
 public:
  std::vector<HfTensorSpec> hf_layout(const std::string& name, const Shape& shape) const override {
    const std::string hf = "language_model." + name;
    if (name != kEmbedding) return {{hf, shape}};
    return {{hf + ".block0", {kFirstRows, shape[1]}}, {hf + ".block1", {shape[0] - kFirstRows, shape[1]}}};
  }
  Tensor from_hf(const std::string& name, std::vector<Tensor> parts) const override {
    return name == kEmbedding ? ops::concat(parts, 0) : parts.at(0);
  }
  std::vector<Tensor> to_hf(const std::string& name, const Tensor& value) const override {
    if (name != kEmbedding) return {value};
    return {ops::narrow(value, 0, 0, kFirstRows), ops::narrow(value, 0, kFirstRows, value.size(0) - kFirstRows)};
  }

  static constexpr const char* kEmbedding = "model.embed_tokens.weight";
  static constexpr int64_t kFirstRows = 40;
};

void register_prefixed_family() {
  register_family("seam_test_prefixed", [](ModelConfig&) {
    return Architecture{
        .spec = {}, .make_layer = dense_decoder_layer, .state_dict_adapter = std::make_shared<PrefixedSplitAdapter>()};
  });
}

void expect_same_parameters(const LanguageModel& a, const LanguageModel& b) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].first, pb[i].first);
    EXPECT_EQ(pa[i].second.to_floats(), pb[i].second.to_floats()) << pa[i].first;
  }
}

}  // namespace

TEST(ModelSeam, AFeedForwardFromTheLayerFactoryRunsInEveryLayerAndReportsItsAuxLoss) {
  register_doubled_mlp_family();
  auto llama = tiny_model("llama");
  auto doubled = tiny_model("seam_test_doubled_mlp");
  // Same parameter names in the same order, so the same seed gives the same weights.
  expect_same_parameters(*llama, *doubled);

  DecoderOutput stock = llama->forward_hidden(token_ids());
  DecoderOutput custom = doubled->forward_hidden(token_ids());
  EXPECT_TRUE(stock.aux_losses.empty());
  ASSERT_EQ(custom.aux_losses.size(), 2u);  // one per layer
  EXPECT_NE(stock.hidden.to_floats(), custom.hidden.to_floats());

  // Checkpointed layers hand the auxiliary losses out of the recomputed region, with the same values and gradients.
  auto grads_of = [&](bool checkpoint_layers) {
    doubled->zero_grad();
    ForwardOptions options;
    options.checkpoint_layers = checkpoint_layers;
    DecoderOutput out = doubled->forward_hidden(token_ids(), options);
    EXPECT_EQ(out.aux_losses.size(), 2u);
    autograd::backward(ops::add(out.aux_losses[0], out.aux_losses[1]));
    std::vector<float> grads;
    for (auto& [name, p] : doubled->named_parameters())
      if (p.grad().defined())
        for (float g : p.grad().to_floats()) grads.push_back(g);
    return grads;
  };
  std::vector<float> plain = grads_of(false);
  EXPECT_FALSE(plain.empty());
  EXPECT_EQ(plain, grads_of(true));
}

TEST(ModelSeam, InputsEmbedsOfTheTokensGiveTheSameHiddenStates) {
  for (const char* family : {"llama", "gemma", "gemma2", "phi3"}) {
    auto model = tiny_model(family);
    const Tensor ids = token_ids();
    ForwardOptions options;
    options.attention_mask = Tensor::from_vector(std::vector<int64_t>{1, 1, 1, 1, 0, 1, 1, 1}, {2, 4});
    Tensor from_ids = model->forward_hidden(ids, options).hidden;
    Tensor from_embeds = model->forward_hidden(DecoderInput::embeds(model->embed(ids)), options).hidden;
    EXPECT_EQ(from_ids.to_floats(), from_embeds.to_floats()) << family;
  }
}

TEST(ModelSeam, GemmaScalesInTheEmbeddingLookupNotTheInputsEmbeds) {
  auto gemma = tiny_model("gemma");
  const Tensor ids = token_ids();
  const Tensor table = gemma->parameter("model.embed_tokens.weight");
  // embed() is transformers' scaled embedding module: rows times sqrt(hidden_size).
  std::vector<float> embedded = gemma->embed(ids).to_floats(), rows = table.to_floats(), expected;
  for (double id : ids.to_doubles())
    for (int64_t d = 0; d < 32; ++d)
      expected.push_back(float(rows[size_t(id) * 32 + size_t(d)] * float(std::sqrt(32.0))));
  EXPECT_EQ(embedded, expected);
  // inputs_embeds are used as given: the scaled rows built here give the ids' hidden states (scaling them again
  // would not).
  Tensor by_hand = Tensor::from_vector(expected, {2, 4, 32});
  EXPECT_EQ(gemma->forward_hidden(DecoderInput::embeds(by_hand)).hidden.to_floats(),
            gemma->forward_hidden(ids).hidden.to_floats());
}

TEST(ModelSeam, InputsEmbedsOfTheWrongShapeOrDtypeAreErrors) {
  auto model = tiny_model("llama");
  EXPECT_NE(error_of([&] {
              model->forward_hidden(DecoderInput::embeds(Tensor::zeros({2, 4, 31})));
            }).find("inputs_embeds must be [batch, seq, 32]"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              model->forward_hidden(DecoderInput::embeds(Tensor::zeros({2, 4, 32}, DType::bf16)));
            }).find("inputs_embeds must be f32"),
            std::string::npos);
  EXPECT_NE(error_of([&] { model->forward_hidden(DecoderInput::embeds(Tensor())); }).find("either input_ids or"),
            std::string::npos);
}

TEST(ModelSeam, TheStockFamiliesStoreEveryParameterUnderItsOwnName) {
  auto model = tiny_model("qwen3");
  io::NamedTensors hf = hf_state_dict(*model);
  auto ours = model->named_parameters();
  ASSERT_EQ(hf.size(), ours.size());
  for (size_t i = 0; i < hf.size(); ++i) {
    EXPECT_EQ(hf[i].first, ours[i].first);
    EXPECT_EQ(hf[i].second.to_floats(), ours[i].second.to_floats());
  }
}

TEST(ModelSeam, TheStateDictAdapterMapsNamesOnSaveAndBackOnLoad) {
  register_prefixed_family();
  TempDir dir;
  auto model = tiny_model("seam_test_prefixed", 9);
  save_pretrained(*model, dir.str());

  io::ShardedReader reader(dir.str());
  EXPECT_TRUE(reader.contains("language_model.model.embed_tokens.weight.block0"));
  EXPECT_EQ(reader.info("language_model.model.embed_tokens.weight.block1").shape, Shape({57, 32}));
  EXPECT_TRUE(reader.contains("language_model.lm_head.weight"));
  EXPECT_FALSE(reader.contains("model.embed_tokens.weight"));
  EXPECT_EQ(reader.names().size(), model->named_parameters().size() + 1);

  auto loaded = AutoModelForCausalLM::from_pretrained(dir.str());
  expect_same_parameters(*model, *loaded);

  // Resuming from a consolidated checkpoint reads through the same adapter.
  auto resumed = tiny_model("seam_test_prefixed", 10);
  checkpoint::load_model_weights(*resumed, dir.str());
  expect_same_parameters(*model, *resumed);
}

TEST(ModelSeam, AMissingMappedTensorIsNamedByItsCheckpointName) {
  register_prefixed_family();
  TempDir dir;
  auto model = tiny_model("seam_test_prefixed");
  save_pretrained(*model, dir.str());
  io::ShardedReader reader(dir.str());
  io::NamedTensors kept;
  for (auto& [name, tensor] : reader.load_all())
    if (name != "language_model.model.embed_tokens.weight.block1") kept.emplace_back(name, ops::clone(tensor));
  io::save_safetensors(dir / "model.safetensors", kept);

  EXPECT_NE(error_of([&] {
              AutoModelForCausalLM::from_pretrained(dir.str());
            }).find("language_model.model.embed_tokens.weight.block1"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              checkpoint::load_model_weights(*model, dir.str());
            }).find("language_model.model.embed_tokens.weight.block1"),
            std::string::npos);
}
