#pragma once
// Image-text-to-text models (transformers' AutoModelForImageTextToText, NeMo's NeMoAutoModelForImageTextToText):
// a vision tower and projector whose image features replace the image placeholder tokens' embeddings, then a
// LanguageModel decoder. Loading and saving go through Hugging Face names, like the causal LMs (auto_model.h).
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "models/auto_model.h"
#include "models/causal_lm.h"
#include "models/config.h"
#include "models/generate.h"
#include "models/language_model.h"
#include "models/siglip.h"
#include "models/state_dict_adapter.h"
#include "nn/module.h"

namespace automodel::models {

// config.json of an image-text-to-text model (Gemma3ForConditionalGeneration: model_type gemma3;
// Idefics3ForConditionalGeneration / SmolVLMForConditionalGeneration: idefics3 / smolvlm), validated.
struct VisionLanguageConfig {
  std::string model_type;
  ModelConfig text;                   // text_config, parsed as its own model_type's config
  SiglipVisionConfig vision;          // vision_config
  int64_t mm_tokens_per_image = 256;  // Idefics 3 / SmolVLM: image_seq_len, the tokens of one image or tile
  int64_t scale_factor = 2;           // Idefics 3 / SmolVLM: the connector's pixel shuffle per side
  int64_t image_token_id = 262144, boi_token_id = 255999, eoi_token_id = 256000;
  bool tie_word_embeddings = true;
  std::string dtype = "float32";
  nlohmann::json raw;                  // the file as read, written back on save
  nlohmann::json generation_config;    // generation_config.json beside it, when there is one
  std::string source = "config.json";  // the file, for errors

  static VisionLanguageConfig from_json(const nlohmann::json& j, const std::string& source);
  nlohmann::json to_json() const;
};

// A LanguageModel whose forward also reads the images of DecoderInput (pixel_values, token_type_ids); config() is its
// text decoder's.
class VisionLanguageModel : public LanguageModel {
 public:
  virtual const VisionLanguageConfig& vision_language_config() const = 0;
  const LanguageModel& language_model() const { return *language_model_; }

  // Projected image features [images, mm_tokens_per_image, text hidden] for pixel_values (Idefics 3: one per real
  // tile, all-zero padding tiles dropped; undefined when every tile is padding).
  virtual Tensor image_features(const Tensor& pixel_values) const = 0;
  // The decoder's inputs_embeds: scaled text embeddings with the image features in the image tokens' places.
  // Errors when the number of image tokens is not images x mm_tokens_per_image.
  virtual Tensor embed(const Tensor& input_ids, const Tensor& pixel_values) const = 0;
  Tensor embed(const Tensor& input_ids) const override { return embed(input_ids, Tensor()); }

  // The kernels of the tower's and projector's linear layers and norms, and the decoder's.
  void set_kernels(const KernelOptions& kernels) override;
  const KernelOptions& kernels() const override { return kernels_; }
  KVCache make_cache(int64_t batch, int64_t capacity) const override {
    return language_model_->make_cache(batch, capacity);
  }
  std::string decoder_layer_name(int64_t l) const override {
    return "language_model." + language_model_->decoder_layer_name(l);
  }

 protected:
  // The text embeddings of input_ids [B, T], checked against the vocabulary (image tokens whose id lies outside it
  // embed as token 0: their embeddings are replaced); `ids` gets input_ids as a flat vector.
  Tensor text_embeddings(const Tensor& input_ids, std::vector<int64_t>& ids) const;

  KernelOptions kernels_;
  std::shared_ptr<CausalLM> language_model_;  // the decoder, registered by each family as `language_model`
};

// The decoder's inputs_embeds of `ids` ([B, T] as a flat row-major vector) with `features` [K, hidden] written over
// the K positions holding image_token_id, in row-major order (transformers' masked_scatter). Errors when the counts
// differ; `what` says what one image is for that message.
Tensor splice_image_features(const Tensor& text_embeds, const std::vector<int64_t>& ids, const Tensor& features,
                             int64_t image_token_id, const std::string& what);
// input_ids [B, T] i64 as a flat vector, each checked to be below `vocab` (or the image token id).
std::vector<int64_t> checked_token_ids(const Tensor& input_ids, int64_t vocab, int64_t image_token_id);

// Whether config.json at model_dir describes an image-text-to-text model (a model_type this file loads).
bool is_vision_language_model_dir(const std::string& model_dir);
std::vector<std::string> supported_vision_language_model_types();

// AutoModelForImageTextToText: a directory (or hub id in the local cache) written by transformers in, the model
// out. Parameters are named as transformers 5 saves them (language_model.model.*, vision_tower.*,
// multi_modal_projector.*); the Hub's transformers 4 checkpoints (vision_tower.vision_model.*) and files with
// transformers 5's module names (model.language_model.*, model.vision_tower.*, lm_head.*) load too.
std::unique_ptr<VisionLanguageModel> load_vision_language_model(const std::string& name_or_path,
                                                                const LoadOptions& options = {});
VisionLanguageConfig load_vision_language_config(const std::string& model_dir);

// Saved by save_pretrained (auto_model.h), under the names transformers 5's save_pretrained writes.

// Greedy or sampled continuation of one prompt with its images (image tokens in the prompt, token_type_ids
// derived from them): the new tokens only, as models::generate.
std::vector<int64_t> generate(const VisionLanguageModel& model, const std::vector<int64_t>& prompt,
                              const Tensor& pixel_values, const GenerationConfig& config);

// log p(token[i] | tokens[< i], images) for i = 1 .. n-1 from one forward pass (token_type_ids derived from the
// image tokens), in f64 from the logits, as models::sequence_logprobs.
std::vector<double> sequence_logprobs(const VisionLanguageModel& model, const std::vector<int64_t>& tokens,
                                      const Tensor& pixel_values);

}  // namespace automodel::models
