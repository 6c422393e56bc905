// Gemma 3's image-text model: SigLIP features average-pooled to mm_tokens_per_image per image, RMSNorm'ed
// ((1 + w), the vision eps) and projected by mm_input_projection_weight, then written over the image tokens'
// embeddings; the gemma3_text decoder runs on the result with each image's tokens attending to each other both
// ways (token_type_ids), and the tied LM head (without final soft-capping: transformers' VLM skips it).
#include "models/gemma3_vision.h"

#include <cmath>

#include "core/error.h"
#include "models/causal_lm.h"
#include "nn/norm.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "ops/concat.h"
#include "ops/matmul.h"
#include "ops/reduce.h"
#include "ops/view.h"

namespace automodel::models {

namespace {

struct MultiModalProjector : nn::Module {
  MultiModalProjector(const VisionLanguageConfig& c, DType dtype) {
    mm_input_projection_weight = Tensor::zeros({c.vision.hidden_size, c.text.hidden_size}, dtype);
    mm_input_projection_weight.set_requires_grad(true);
    register_parameter("mm_input_projection_weight", &mm_input_projection_weight);
    mm_soft_emb_norm = register_module(
        "mm_soft_emb_norm", std::make_shared<nn::RMSNorm>(c.vision.hidden_size, c.vision.layer_norm_eps, true, dtype));
  }
  Tensor mm_input_projection_weight;  // [vision hidden, text hidden]: features @ weight
  std::shared_ptr<nn::RMSNorm> mm_soft_emb_norm;
};

// Positions of one row's runs of token_type_ids == 1, numbered from 0 per row (-1 elsewhere), after `past`
// positions of -1: transformers' get_block_sequence_ids_for_mask.
Tensor image_blocks(const Tensor& token_type_ids, int64_t past) {
  const int64_t B = token_type_ids.size(0), T = token_type_ids.size(1);
  const std::vector<double> types = token_type_ids.to_doubles();
  std::vector<int64_t> ids(size_t(B * (past + T)), -1);
  for (int64_t b = 0; b < B; ++b) {
    int64_t block = -1;
    bool previous = false;
    for (int64_t t = 0; t < T; ++t) {
      const bool image = types[size_t(b * T + t)] == 1;
      if (image && !previous) ++block;
      if (image) ids[size_t(b * (past + T) + past + t)] = block;
      previous = image;
    }
  }
  return Tensor::from_vector(ids, {B, past + T});
}

class Gemma3ForConditionalGeneration : public VisionLanguageModel {
 public:
  Gemma3ForConditionalGeneration(VisionLanguageConfig config, DType dtype) : config_(std::move(config)), dtype_(dtype) {
    // Named as transformers 5 writes the checkpoint (language_model.model.*, language_model.lm_head when untied,
    // vision_tower.*, multi_modal_projector.*), so the checkpoint layout is the identity.
    ModelConfig text = config_.text;
    std::shared_ptr<CausalLM> decoder(build_causal_lm(std::move(text), dtype));
    config_.text = decoder->config();  // with the family's reading (layer windows, RoPE per layer type)
    // Registered in the order of the forward pass, as transformers' Gemma3Model registers them: the parameters after
    // the last decoder layer (the final norm) are then only those used after it, which data parallel reduces first.
    vision_tower_ = register_module("vision_tower", std::make_shared<SiglipVisionTower>(config_.vision, dtype));
    multi_modal_projector_ =
        register_module("multi_modal_projector", std::make_shared<MultiModalProjector>(config_, dtype));
    language_model_ = register_module("language_model", decoder);
    tokens_per_side_ = int64_t(std::lround(std::sqrt(double(config_.mm_tokens_per_image))));
    pool_ = config_.vision.patches_per_side() / tokens_per_side_;
  }

  const VisionLanguageConfig& vision_language_config() const override { return config_; }
  const ModelConfig& config() const override { return config_.text; }
  DType dtype() const override { return dtype_; }
  Tensor lm_head_weight() const override { return language_model_->lm_head_weight(); }

  Tensor image_features(const Tensor& pixel_values) const override {
    const Tensor vision = vision_tower_->forward(pixel_values, kernels_);  // [N, S * S, Ev]
    const int64_t N = vision.size(0), E = vision.size(2), t = tokens_per_side_, k = pool_;
    // AvgPool2d(k, stride k) over the S x S patch grid, row-major like the patches.
    Tensor grid = ops::reshape(vision, {N, t, k, t, k, E});
    Tensor pooled = ops::reshape(ops::mean(grid, {2, 4}), {N, t * t, E});
    const MultiModalProjector& p = *multi_modal_projector_;
    Tensor normed = p.mm_soft_emb_norm->forward(pooled);
    return ops::matmul(normed, p.mm_input_projection_weight);
  }

  using VisionLanguageModel::embed;
  Tensor embed(const Tensor& input_ids, const Tensor& pixel_values) const override {
    std::vector<int64_t> ids;
    Tensor embeds = text_embeddings(input_ids, ids);
    if (!pixel_values.defined()) return embeds;
    const Tensor features = image_features(ops::to_dtype(pixel_values, dtype_));  // [N, M, H]
    const int64_t N = features.size(0), M = features.size(1);
    return splice_image_features(
        embeds, ids, ops::reshape(features, {N * M, features.size(2)}), config_.image_token_id,
        std::to_string(N) + " image(s) of " + std::to_string(M) + " tokens each (mm_tokens_per_image)");
  }

  DecoderOutput forward_hidden(const DecoderInput& input, const ForwardOptions& options) const override {
    ForwardOptions decoder_options = options;
    if (input.token_type_ids.defined()) {
      AM_CHECK(input.token_type_ids.shape() == input.input_ids.shape(), "token_type_ids must be shaped like input_ids ",
               shape_str(input.input_ids.shape()), ", got ", input.token_type_ids.describe());
      AM_CHECK(!options.bidirectional_blocks.defined(), "pass token_type_ids or bidirectional_blocks, not both");
      decoder_options.bidirectional_blocks =
          image_blocks(input.token_type_ids, options.cache ? options.cache->length : 0);
    }
    if (input.inputs_embeds.defined()) {
      AM_CHECK(!input.input_ids.defined() && !input.pixel_values.defined(),
               "pass input_ids (with pixel_values) or inputs_embeds, not both");
      return language_model_->forward_hidden(DecoderInput::embeds(input.inputs_embeds), decoder_options);
    }
    AM_CHECK(input.input_ids.defined(), "a vision-language forward needs input_ids");
    const Tensor embeds = embed(input.input_ids, input.pixel_values);
    return language_model_->forward_hidden(DecoderInput::embeds(embeds), decoder_options);
  }

  Tensor logits(const Tensor& hidden) const override { return ops::linear(hidden, language_model_->lm_head_weight()); }

  const StateDictAdapter& state_dict_adapter() const override { return adapter_; }
  std::string module_name(const std::string& name) const override {
    for (auto [saved, module] :
         {std::pair{"language_model.model.", "model.language_model."}, std::pair{"language_model.lm_head.", "lm_head."},
          std::pair{"vision_tower.", "model.vision_tower."},
          std::pair{"multi_modal_projector.", "model.multi_modal_projector."}}) {
      const std::string prefix = saved;
      if (name.rfind(prefix, 0) == 0) return module + name.substr(prefix.size());
    }
    return name;
  }

 private:
  VisionLanguageConfig config_;
  DType dtype_;
  StateDictAdapter adapter_;
  std::shared_ptr<SiglipVisionTower> vision_tower_;
  std::shared_ptr<MultiModalProjector> multi_modal_projector_;
  int64_t tokens_per_side_ = 0, pool_ = 0;
};

}  // namespace

nlohmann::json gemma3_text_defaults() {
  return {{"model_type", "gemma3_text"},
          {"vocab_size", 262208},
          {"hidden_size", 2304},
          {"intermediate_size", 9216},
          {"num_hidden_layers", 26},
          {"num_attention_heads", 8},
          {"num_key_value_heads", 4},
          {"head_dim", 256},
          {"hidden_activation", "gelu_pytorch_tanh"},
          {"max_position_embeddings", 131072},
          {"rms_norm_eps", 1e-6},
          {"pad_token_id", 0},
          {"eos_token_id", 1},
          {"bos_token_id", 2},
          {"query_pre_attn_scalar", 256},
          {"sliding_window", 4096}};
}

std::unique_ptr<VisionLanguageModel> build_gemma3_vision_language_model(const VisionLanguageConfig& c, DType dtype) {
  const int64_t side = int64_t(std::lround(std::sqrt(double(c.mm_tokens_per_image))));
  if (c.mm_tokens_per_image <= 0 || side * side != c.mm_tokens_per_image)
    config_error(
        c.source, "mm_tokens_per_image",
        "must be a positive square number (tokens per side squared), got " + std::to_string(c.mm_tokens_per_image));
  const int64_t patches = c.vision.patches_per_side();
  if (patches % side != 0)
    config_error(c.source, "mm_tokens_per_image",
                 "is " + std::to_string(c.mm_tokens_per_image) + ": its " + std::to_string(side) +
                     " tokens per side do not evenly pool the vision tower's " + std::to_string(patches) +
                     " patches per side (vision_config.image_size / patch_size)",
                 "use a number of tokens per side that divides image_size / patch_size");
  if (c.text.model_type != "gemma3_text")
    config_error(c.source, "text_config.model_type", "is '" + c.text.model_type + "'; Gemma 3 needs gemma3_text");
  return std::make_unique<Gemma3ForConditionalGeneration>(c, dtype);
}

}  // namespace automodel::models
