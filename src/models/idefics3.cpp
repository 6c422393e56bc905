// Idefics 3 / SmolVLM: every image arrives as max_image_size tiles (and its global view), padded per sample to the
// batch's tile count with all-zero images, which are dropped before the tower as transformers does. The tower's
// patch features are pixel-shuffled (scale_factor^2 neighbouring patches concatenated) and projected to the text
// width, one image_seq_len run of <image> tokens per tile; the Llama decoder is causal throughout (no image blocks).
#include "models/idefics3.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "models/causal_lm.h"
#include "nn/linear.h"
#include "ops/cast.h"
#include "ops/matmul.h"
#include "ops/view.h"

namespace automodel::models {

namespace {

using nlohmann::json;

// transformers' LlamaConfig defaults as Idefics3Config / SmolVLMConfig build text_config (rms_norm_eps 1e-5).
json llama_text_defaults() {
  return {
      {"model_type", "llama"},   {"vocab_size", 32000},       {"hidden_size", 4096},  {"intermediate_size", 11008},
      {"num_hidden_layers", 32}, {"num_attention_heads", 32}, {"hidden_act", "silu"}, {"max_position_embeddings", 2048},
      {"rms_norm_eps", 1e-5},    {"bos_token_id", 1},         {"eos_token_id", 2}};
}

// Idefics3VisionConfig / SmolVLMVisionConfig defaults.
json vision_defaults() {
  return {{"hidden_size", 1152},     {"intermediate_size", 3072},
          {"num_hidden_layers", 12}, {"num_attention_heads", 16},
          {"num_channels", 3},       {"image_size", 224},
          {"patch_size", 32},        {"hidden_act", "gelu_pytorch_tanh"},
          {"layer_norm_eps", 1e-6}};
}

json sub_object(const json& j, const std::string& key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return json::object();
  if (!it->is_object()) config_error(source, key, "must be an object, got " + it->dump());
  return *it;
}

// Our parameter names (the Gemma 3 layout every image-text model here shares: vision_tower.*, language_model.model.*,
// language_model.lm_head.*, plus connector.*) to transformers' module and checkpoint names, and back.
const std::pair<const char*, const char*> kRenames[] = {{"vision_tower.", "model.vision_model."},
                                                        {"connector.", "model.connector."},
                                                        {"language_model.model.", "model.text_model."},
                                                        {"language_model.lm_head.", "lm_head."}};

std::string hf_name(const std::string& name) {
  for (auto [ours, theirs] : kRenames)
    if (name.rfind(ours, 0) == 0) return theirs + name.substr(std::string(ours).size());
  return name;
}

class Idefics3StateDictAdapter : public StateDictAdapter {
 public:
  std::vector<HfTensorSpec> hf_layout(const std::string& name, const Shape& shape) const override {
    return {{hf_name(name), shape}};
  }
};

// modality_projection.proj: a Linear without bias from vision hidden * scale_factor^2 to text hidden.
struct ModalityProjection : nn::Module {
  ModalityProjection(const VisionLanguageConfig& c, DType dtype) {
    proj = register_module("proj", std::make_shared<nn::Linear>(c.vision.hidden_size * c.scale_factor * c.scale_factor,
                                                                c.text.hidden_size, false, dtype));
  }
  std::shared_ptr<nn::Linear> proj;
};

struct Connector : nn::Module {
  Connector(const VisionLanguageConfig& c, DType dtype) {
    modality_projection = register_module("modality_projection", std::make_shared<ModalityProjection>(c, dtype));
  }
  std::shared_ptr<ModalityProjection> modality_projection;
};

// torch.arange(1 / side, 1.0, 1 / side) in float32 as torch's CPU kernel computes it: length from the double
// range, then 2 x 8-lane vectors at a time (base rounded to float, lanes added in double), the tail one by one.
std::vector<float> position_boundaries(int64_t side) {
  const double step = 1.0 / double(side);
  const int64_t n = int64_t(std::ceil((1.0 - step) / step));
  std::vector<float> out;
  int64_t idx = 0;
  constexpr int64_t kLanes = 8;
  while (n - idx >= 2 * kLanes)
    for (int v = 0; v < 2; ++v, idx += kLanes) {
      const double base = double(float(step + step * double(idx)));
      for (int64_t i = 0; i < kLanes; ++i) out.push_back(float(base + double(i) * step));
    }
  for (; idx < n; ++idx) out.push_back(float(step + step * double(idx)));
  return out;
}

// torch.bucketize(x, boundaries, right=True): how many boundaries are <= x.
int64_t bucket(float x, const std::vector<float>& boundaries) {
  return std::upper_bound(boundaries.begin(), boundaries.end(), x) - boundaries.begin();
}

class Idefics3ForConditionalGeneration : public VisionLanguageModel {
 public:
  Idefics3ForConditionalGeneration(VisionLanguageConfig config, DType dtype)
      : config_(std::move(config)), dtype_(dtype) {
    std::shared_ptr<CausalLM> decoder(build_causal_lm(config_.text, dtype));
    config_.text = decoder->config();
    // In the order of the forward pass, as Idefics3Model registers them (vision_model, connector, text_model), then
    // the LM head.
    vision_tower_ = register_module("vision_tower", std::make_shared<SiglipVisionTower>(config_.vision, dtype));
    connector_ = register_module("connector", std::make_shared<Connector>(config_, dtype));
    language_model_ = register_module("language_model", decoder);
  }

  const VisionLanguageConfig& vision_language_config() const override { return config_; }
  const ModelConfig& config() const override { return config_.text; }
  DType dtype() const override { return dtype_; }
  Tensor lm_head_weight() const override { return language_model_->lm_head_weight(); }

  Tensor image_features(const Tensor& pixel_values) const override { return features(pixel_values, Tensor()); }

  // [tiles, image_seq_len, text hidden] for the real (not all-zero) tiles of pixel_values; undefined when none is.
  Tensor features(const Tensor& pixel_values, const Tensor& pixel_attention_mask) const {
    const SiglipVisionConfig& v = config_.vision;
    if (!((pixel_values.dim() == 4 || pixel_values.dim() == 5) && pixel_values.size(-3) == v.num_channels))
      throw Error("pixel_values has shape " + shape_str(pixel_values.shape()) + "; expected [tiles, " +
                      std::to_string(v.num_channels) + ", height, width] or [batch, tiles, " +
                      std::to_string(v.num_channels) + ", height, width]",
                  "pixel_values", "pass the image processor's pixel_values");
    if (!is_floating(pixel_values.dtype()))
      throw Error("pixel_values must be floating point, got " + pixel_values.describe(), "pixel_values");
    const int64_t H = pixel_values.size(-2), W = pixel_values.size(-1), C = v.num_channels;
    const int64_t count = pixel_values.numel() / (C * H * W), plane = H * W;
    std::vector<float> mask;
    if (pixel_attention_mask.defined()) {
      if (pixel_attention_mask.numel() != count * plane || pixel_attention_mask.size(-1) != W ||
          pixel_attention_mask.size(-2) != H)
        throw Error("pixel_attention_mask has shape " + shape_str(pixel_attention_mask.shape()) +
                        ", which does not match pixel_values " + shape_str(pixel_values.shape()),
                    "pixel_attention_mask", "pass the image processor's pixel_attention_mask with its pixel_values");
      mask = pixel_attention_mask.to_floats();
    }
    // Padding tiles (all zeros) are dropped, as Idefics3Model.get_image_features does.
    const std::vector<float> pixels = ops::to_dtype(pixel_values, DType::f32).to_floats();
    std::vector<int64_t> real;
    for (int64_t i = 0; i < count; ++i) {
      const auto first = pixels.begin() + i * C * plane;
      if (std::any_of(first, first + C * plane, [](float x) { return x != 0.0f; })) real.push_back(i);
    }
    if (real.empty()) return Tensor();
    const int64_t N = int64_t(real.size()), P = v.patch_size, rows = H / P, cols = W / P;
    std::vector<float> kept;
    kept.reserve(size_t(N * C * plane));
    for (int64_t i : real)
      kept.insert(kept.end(), pixels.begin() + i * C * plane, pixels.begin() + (i + 1) * C * plane);

    // Patch attention mask (a patch is real when any of its pixels is; without a pixel mask every patch is) and the
    // bucketed position ids, which transformers computes in both cases.
    std::vector<int64_t> ids, patches;
    bool partial = false;
    for (int64_t n = 0; n < N; ++n) {
      std::vector<uint8_t> m(size_t(rows * cols), mask.empty() ? 1 : 0);
      for (int64_t r = 0; r < rows && !mask.empty(); ++r)
        for (int64_t c = 0; c < cols; ++c)
          for (int64_t y = r * P; y < (r + 1) * P && !m[size_t(r * cols + c)]; ++y)
            for (int64_t x = c * P; x < (c + 1) * P; ++x)
              if (mask[size_t(real[size_t(n)] * plane + y * W + x)] != 0) {
                m[size_t(r * cols + c)] = 1;
                break;
              }
      const std::vector<int64_t> image_ids =
          bucketed_position_ids(m, rows, cols, v.patches_per_side(), real[size_t(n)]);
      ids.insert(ids.end(), image_ids.begin(), image_ids.end());
      for (uint8_t b : m) {
        patches.push_back(b);
        partial = partial || !b;
      }
    }
    const Tensor position_ids = Tensor::from_vector(ids, {N, rows * cols});
    const Tensor patch_mask = partial ? Tensor::from_vector(patches, {N, rows * cols}) : Tensor();
    const Tensor hidden =
        vision_tower_->forward(Tensor::from_vector(kept, {N, C, H, W}), position_ids, patch_mask, kernels_);
    return connector(hidden);
  }

  using VisionLanguageModel::embed;
  Tensor embed(const Tensor& input_ids, const Tensor& pixel_values) const override {
    return embed(input_ids, pixel_values, Tensor());
  }

  Tensor embed(const Tensor& input_ids, const Tensor& pixel_values, const Tensor& pixel_attention_mask) const {
    std::vector<int64_t> ids;
    Tensor embeds = text_embeddings(input_ids, ids);
    if (!pixel_values.defined()) return embeds;
    const Tensor tiles = features(pixel_values, pixel_attention_mask);  // [N, M, hidden]
    const int64_t N = tiles.defined() ? tiles.size(0) : 0, M = config_.mm_tokens_per_image;
    return splice_image_features(embeds, ids, tiles.defined() ? ops::reshape(tiles, {N * M, tiles.size(2)}) : Tensor(),
                                 config_.image_token_id,
                                 std::to_string(N) + " image tile(s) of " + std::to_string(M) +
                                     " tokens each (image_seq_len; all-zero padding tiles do not count)");
  }

  DecoderOutput forward_hidden(const DecoderInput& input, const ForwardOptions& options) const override {
    // token_type_ids are ignored: Idefics 3's decoder is causal over image tokens too.
    if (input.inputs_embeds.defined()) {
      AM_CHECK(!input.input_ids.defined() && !input.pixel_values.defined(),
               "pass input_ids (with pixel_values) or inputs_embeds, not both");
      return language_model_->forward_hidden(DecoderInput::embeds(input.inputs_embeds), options);
    }
    AM_CHECK(input.input_ids.defined(), "a vision-language forward needs input_ids");
    const Tensor embeds = embed(input.input_ids, input.pixel_values, input.pixel_attention_mask);
    return language_model_->forward_hidden(DecoderInput::embeds(embeds), options);
  }

  Tensor logits(const Tensor& hidden) const override { return language_model_->logits(hidden); }

  const StateDictAdapter& state_dict_adapter() const override { return adapter_; }
  std::string module_name(const std::string& name) const override { return hf_name(name); }

 private:
  // SmolVLMConnector: pixel shuffle, then modality_projection.
  Tensor connector(const Tensor& x) const {
    const int64_t N = x.size(0), seq = x.size(1), E = x.size(2), s = config_.scale_factor;
    const int64_t side = int64_t(std::lround(std::sqrt(double(seq))));
    Tensor y = ops::reshape(x, {N, side, side / s, E * s});
    y = ops::reshape(ops::contiguous(ops::permute(y, {0, 2, 1, 3})), {N, side / s, side / s, E * s * s});
    y = ops::reshape(ops::contiguous(ops::permute(y, {0, 2, 1, 3})), {N, seq / (s * s), E * s * s});
    return connector_->modality_projection->proj->forward(y);
  }

  VisionLanguageConfig config_;
  DType dtype_;
  Idefics3StateDictAdapter adapter_;
  std::shared_ptr<SiglipVisionTower> vision_tower_;
  std::shared_ptr<Connector> connector_;
};

}  // namespace

std::vector<int64_t> bucketed_position_ids(const std::vector<uint8_t>& patch_mask, int64_t rows, int64_t cols,
                                           int64_t side, int64_t image) {
  int64_t real_rows = 0, real_cols = 0;
  for (int64_t r = 0; r < rows; ++r) real_rows += patch_mask[size_t(r * cols)] != 0;
  for (int64_t c = 0; c < cols; ++c) real_cols += patch_mask[size_t(c)] != 0;
  if (real_rows == 0 || real_cols == 0)
    throw Error("the pixel_attention_mask of image tile " + std::to_string(image) +
                    " marks no pixel of its first patch row or column as real, but the tile has pixels",
                "pixel_attention_mask", "padding goes at the bottom and right of a tile (as the image processor pads)");
  const std::vector<float> boundaries = position_boundaries(side);
  const float step_h = 1.0f / float(real_rows), step_w = 1.0f / float(real_cols), top = float(1.0 - 1e-6);
  std::vector<int64_t> ids(size_t(rows * cols), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      if (patch_mask[size_t(r * cols + c)]) {
        const int64_t h = bucket(std::min(float(r) * step_h, top), boundaries);
        const int64_t w = bucket(std::min(float(c) * step_w, top), boundaries);
        ids[size_t(r * cols + c)] = h * side + w;
      }
  return ids;
}

void parse_idefics3_config(const json& j, VisionLanguageConfig& c) {
  const std::string& source = c.source;
  c.tie_word_embeddings = json_get<bool>(j, "tie_word_embeddings", false, source);
  c.dtype = json_get<std::string>(j, "dtype", json_get<std::string>(j, "torch_dtype", "float32", source), source);
  c.image_token_id = json_get<int64_t>(j, "image_token_id", 128257, source);
  if (c.image_token_id < 0)
    config_error(source, "image_token_id", "must be a non-negative token id, got " + std::to_string(c.image_token_id));
  c.scale_factor = json_get<int64_t>(j, "scale_factor", 2, source);
  if (c.scale_factor <= 0)
    config_error(source, "scale_factor", "must be a positive integer, got " + std::to_string(c.scale_factor));

  json text = llama_text_defaults();
  const json given_text = sub_object(j, "text_config", source);
  if (given_text.contains("model_type") && given_text["model_type"] != "llama") text = json::object();
  text.update(given_text);
  // The LM head is tied (or not) as the top-level config says, as transformers ties it.
  text["tie_word_embeddings"] = c.tie_word_embeddings;
  c.text = ModelConfig::from_json(text, source + " (text_config)");

  json vision = vision_defaults();
  const json given_vision = sub_object(j, "vision_config", source);
  vision.update(given_vision);
  const std::string vision_type = json_get<std::string>(given_vision, "model_type", c.model_type + "_vision", source);
  if (vision_type != "idefics3_vision" && vision_type != "smolvlm_vision")
    config_error(source, "vision_config.model_type", "'" + vision_type + "' is not supported",
                 "supported vision towers: idefics3_vision, smolvlm_vision");
  vision["model_type"] = "siglip_vision_model";  // the same tower
  c.vision = SiglipVisionConfig::from_json(vision, "vision_config", source);
  const int64_t side = c.vision.patches_per_side();
  if (side % c.scale_factor != 0)
    config_error(source, "scale_factor",
                 "(" + std::to_string(c.scale_factor) + ") does not divide the vision tower's " + std::to_string(side) +
                     " patches per side (vision_config.image_size / patch_size)",
                 "use a scale_factor that divides image_size / patch_size");
  c.mm_tokens_per_image = side * side / (c.scale_factor * c.scale_factor);
}

std::unique_ptr<VisionLanguageModel> build_idefics3_vision_language_model(const VisionLanguageConfig& c, DType dtype) {
  return std::make_unique<Idefics3ForConditionalGeneration>(c, dtype);
}

}  // namespace automodel::models
