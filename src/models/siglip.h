#pragma once
// SigLIP's vision tower (transformers' SiglipVisionModel, modeling_siglip.py) as Gemma 3 and PaliGemma use it:
// a patch embedding (a convolution whose stride equals its kernel, done as patch extraction and a matmul),
// learned position embeddings, bidirectional pre-norm encoder layers (LayerNorm, attention with biases, GELU MLP
// with biases) and a final LayerNorm. Parameter names are those transformers 5 gives the tower (SiglipVisionModel
// without its `vision_model.` level, which it drops on load and save).
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "models/language_model.h"
#include "nn/embedding.h"
#include "nn/linear.h"
#include "nn/module.h"
#include "nn/norm.h"

namespace automodel::models {

// config.json's `vision_config` (model_type siglip_vision_model), validated.
struct SiglipVisionConfig {
  int64_t hidden_size = 768, intermediate_size = 3072, num_hidden_layers = 12, num_attention_heads = 12;
  int64_t num_channels = 3, image_size = 224, patch_size = 16;
  double layer_norm_eps = 1e-6;
  bool gelu_tanh = true;  // hidden_act gelu_pytorch_tanh (else exact gelu)

  int64_t patches_per_side() const { return image_size / patch_size; }
  int64_t num_patches() const { return patches_per_side() * patches_per_side(); }
  int64_t head_dim() const { return hidden_size / num_attention_heads; }

  // `key` names the object in errors (e.g. "vision_config"); `source` the file.
  static SiglipVisionConfig from_json(const nlohmann::json& j, const std::string& key, const std::string& source);
};

// One encoder layer: layer_norm1, self_attn (q/k/v/out_proj), layer_norm2, mlp (fc1, fc2).
class SiglipEncoderLayer : public nn::Module {
 public:
  SiglipEncoderLayer(const SiglipVisionConfig& c, DType dtype);
  // key_mask: optional additive [N, 1, 1, T] (0 for a real patch, the float minimum for a padded one), as
  // transformers' bidirectional padding mask: every query, padded or not, sees only the real patches.
  Tensor forward(const Tensor& x, const KernelOptions& kernels, const Tensor& key_mask = Tensor()) const;

 private:
  struct Attention : nn::Module {
    Attention(const SiglipVisionConfig& c, DType dtype);
    std::shared_ptr<nn::Linear> q_proj, k_proj, v_proj, out_proj;
  };
  struct Mlp : nn::Module {
    Mlp(const SiglipVisionConfig& c, DType dtype);
    std::shared_ptr<nn::Linear> fc1, fc2;
  };
  SiglipVisionConfig config_;
  std::shared_ptr<nn::LayerNorm> layer_norm1_, layer_norm2_;
  std::shared_ptr<Attention> self_attn_;
  std::shared_ptr<Mlp> mlp_;
};

// transformers' SiglipVisionModel without the pooling head: modules `embeddings`, `encoder.layers.N`,
// `post_layernorm`.
class SiglipVisionTower : public nn::Module {
 public:
  SiglipVisionTower(const SiglipVisionConfig& config, DType dtype);
  // pixel_values [N, channels, image_size, image_size] (any float dtype, cast to the tower's) -> last hidden
  // state [N, num_patches, hidden] after post_layernorm. Other shapes are an Error naming the expected one.
  Tensor forward(const Tensor& pixel_values, const KernelOptions& kernels) const;
  // The same with each patch's position id given ([N, num_patches] i64, into position_embedding) and the padded
  // patches masked as attention keys (patch_mask [N, num_patches], 1 = real; undefined: all real): Idefics 2 / 3's
  // variable-resolution form of the tower.
  Tensor forward(const Tensor& pixel_values, const Tensor& position_ids, const Tensor& patch_mask,
                 const KernelOptions& kernels) const;
  const SiglipVisionConfig& config() const { return config_; }

 private:
  struct Embeddings;
  struct Encoder;
  SiglipVisionConfig config_;
  DType dtype_;
  std::shared_ptr<Embeddings> embeddings_;
  std::shared_ptr<Encoder> encoder_;
  std::shared_ptr<nn::LayerNorm> post_layernorm_;
};

}  // namespace automodel::models
