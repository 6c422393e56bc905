#include "models/siglip.h"

#include <cmath>
#include <limits>

#include "core/allocator.h"
#include "core/error.h"
#include "models/config.h"
#include "nn/eager.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "ops/matmul.h"
#include "ops/softmax.h"
#include "ops/view.h"

namespace automodel::models {

using nn::LayerNorm;
using nn::Linear;

namespace {

int64_t positive(const nlohmann::json& j, const std::string& key, int64_t fallback, const std::string& prefix,
                 const std::string& source) {
  const int64_t v = json_get<int64_t>(j, key, fallback, source);
  if (v <= 0) config_error(source, prefix + "." + key, "must be a positive integer, got " + std::to_string(v));
  return v;
}

// An Error naming the key whose size makes the tower's parameters overflow 64 bits or exceed the machine's memory
// (in bf16, the least a model loads in).
void check_size(const SiglipVisionConfig& c, const std::string& prefix, const std::string& source) {
  uint64_t total = 0;
  bool wraps = false;
  auto add_product = [&](std::initializer_list<int64_t> factors) {
    uint64_t p = 1;
    for (int64_t f : factors) wraps = wraps || __builtin_mul_overflow(p, uint64_t(f), &p);
    wraps = wraps || __builtin_add_overflow(total, p, &total);
  };
  const int64_t side = c.image_size / c.patch_size;
  add_product({side, side, c.hidden_size});                                       // position embeddings
  add_product({c.hidden_size, c.num_channels, c.patch_size, c.patch_size});       // patch embedding
  add_product({c.num_hidden_layers, 4, c.hidden_size, c.hidden_size + 1});        // attention
  add_product({c.num_hidden_layers, 2, c.hidden_size, c.intermediate_size + 1});  // MLP
  uint64_t bytes = 0;
  wraps = wraps || __builtin_mul_overflow(total, uint64_t(2), &bytes);
  if (!wraps && bytes <= physical_memory_bytes()) return;
  config_error(source, prefix,
               "describes a vision tower whose parameters need " +
                   (wraps ? std::string("more than 2^64 bytes") : byte_count(bytes)) +
                   " in bfloat16, more than this machine's physical memory (" + byte_count(physical_memory_bytes()) +
                   ")",
               "check image_size / patch_size, hidden_size, intermediate_size and num_hidden_layers");
}

}  // namespace

SiglipVisionConfig SiglipVisionConfig::from_json(const nlohmann::json& j, const std::string& key,
                                                 const std::string& source) {
  if (!j.is_object()) config_error(source, key, "must be an object, got " + j.dump());
  SiglipVisionConfig c;
  const std::string type = json_get<std::string>(j, "model_type", "siglip_vision_model", source);
  if (type != "siglip_vision_model")
    config_error(source, key + ".model_type", "'" + type + "' is not supported",
                 "supported vision towers: siglip_vision_model");
  c.hidden_size = positive(j, "hidden_size", c.hidden_size, key, source);
  c.intermediate_size = positive(j, "intermediate_size", c.intermediate_size, key, source);
  c.num_hidden_layers = positive(j, "num_hidden_layers", c.num_hidden_layers, key, source);
  c.num_attention_heads = positive(j, "num_attention_heads", c.num_attention_heads, key, source);
  c.num_channels = positive(j, "num_channels", c.num_channels, key, source);
  c.image_size = positive(j, "image_size", c.image_size, key, source);
  c.patch_size = positive(j, "patch_size", c.patch_size, key, source);
  c.layer_norm_eps = json_get<double>(j, "layer_norm_eps", c.layer_norm_eps, source);
  if (!(c.layer_norm_eps > 0) || !std::isfinite(c.layer_norm_eps))
    config_error(source, key + ".layer_norm_eps",
                 "must be a positive finite number, got " + j["layer_norm_eps"].dump());
  if (c.hidden_size % c.num_attention_heads != 0)
    config_error(source, key + ".hidden_size",
                 "(" + std::to_string(c.hidden_size) + ") is not a multiple of num_attention_heads (" +
                     std::to_string(c.num_attention_heads) + ")");
  if (c.patch_size > c.image_size)
    config_error(source, key + ".patch_size",
                 "(" + std::to_string(c.patch_size) + ") is larger than image_size (" + std::to_string(c.image_size) +
                     "): no patch fits");
  const std::string act = json_get<std::string>(j, "hidden_act", "gelu_pytorch_tanh", source);
  if (act != "gelu_pytorch_tanh" && act != "gelu")
    config_error(source, key + ".hidden_act", "'" + act + "' is not supported for SigLIP",
                 "supported: gelu_pytorch_tanh, gelu");
  c.gelu_tanh = act == "gelu_pytorch_tanh";
  check_size(c, key, source);
  return c;
}

// A Conv2d with stride = kernel = patch_size and no padding: patches_per_side^2 non-overlapping patches, each
// flattened in the weight's (channel, row, column) order and multiplied by the weight as a matrix.
struct PatchEmbedding : nn::Module {
  PatchEmbedding(const SiglipVisionConfig& c, DType dtype) {
    weight = Tensor::zeros({c.hidden_size, c.num_channels, c.patch_size, c.patch_size}, dtype);
    bias = Tensor::zeros({c.hidden_size}, dtype);
    weight.set_requires_grad(true);
    bias.set_requires_grad(true);
    register_parameter("weight", &weight);
    register_parameter("bias", &bias);
  }
  // [N, C, H, W] -> [N, patches, hidden]
  Tensor forward(const Tensor& pixels, const SiglipVisionConfig& c) const {
    const int64_t N = pixels.size(0), C = c.num_channels, P = c.patch_size, S = c.patches_per_side();
    Tensor x = pixels;
    if (S * P != c.image_size) x = ops::narrow(ops::narrow(x, 2, 0, S * P), 3, 0, S * P);  // "valid" padding
    x = ops::reshape(ops::contiguous(x), {N, C, S, P, S, P});
    x = ops::reshape(ops::contiguous(ops::permute(x, {0, 2, 4, 1, 3, 5})), {N, S * S, C * P * P});
    return ops::linear(x, ops::reshape(weight, {c.hidden_size, C * P * P}), bias);
  }
  Tensor weight, bias;
};

struct SiglipVisionTower::Embeddings : nn::Module {
  Embeddings(const SiglipVisionConfig& c, DType dtype) {
    patch_embedding = register_module("patch_embedding", std::make_shared<PatchEmbedding>(c, dtype));
    position_embedding = register_module("position_embedding",
                                         std::make_shared<nn::Embedding>(c.num_patches(), c.hidden_size, -1, dtype));
  }
  std::shared_ptr<PatchEmbedding> patch_embedding;
  std::shared_ptr<nn::Embedding> position_embedding;
};

// transformers' SiglipEncoder: only `layers`.
struct SiglipVisionTower::Encoder : nn::Module {
  Encoder(const SiglipVisionConfig& c, DType dtype) {
    layers = register_module("layers", std::make_shared<nn::ModuleList<SiglipEncoderLayer>>());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->append(std::make_shared<SiglipEncoderLayer>(c, dtype));
  }
  std::shared_ptr<nn::ModuleList<SiglipEncoderLayer>> layers;
};

SiglipEncoderLayer::Attention::Attention(const SiglipVisionConfig& c, DType dtype) {
  q_proj = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true, dtype));
  k_proj = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true, dtype));
  v_proj = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true, dtype));
  out_proj = register_module("out_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true, dtype));
}

SiglipEncoderLayer::Mlp::Mlp(const SiglipVisionConfig& c, DType dtype) {
  fc1 = register_module("fc1", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, true, dtype));
  fc2 = register_module("fc2", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, true, dtype));
}

SiglipEncoderLayer::SiglipEncoderLayer(const SiglipVisionConfig& c, DType dtype) : config_(c) {
  layer_norm1_ =
      register_module("layer_norm1", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps, true, dtype));
  self_attn_ = register_module("self_attn", std::make_shared<Attention>(c, dtype));
  layer_norm2_ =
      register_module("layer_norm2", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps, true, dtype));
  mlp_ = register_module("mlp", std::make_shared<Mlp>(c, dtype));
}

namespace {

// Attention over all keys with an additive key mask, in f32 as transformers' eager and SDPA paths compute it.
Tensor masked_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask, double scale) {
  const int64_t N = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3);
  const Tensor qh = ops::permute(q, {0, 2, 1, 3}), kh = ops::permute(k, {0, 2, 1, 3}),
               vh = ops::permute(v, {0, 2, 1, 3});
  Tensor scores = ops::to_dtype(ops::scale(ops::matmul(qh, kh, false, true), scale), DType::f32);
  scores = ops::add(scores, key_mask);
  const Tensor probs = ops::to_dtype(ops::softmax(scores, -1), q.dtype());
  const Tensor out = ops::matmul(probs, vh);  // [N, H, T, D]
  return ops::reshape(ops::contiguous(ops::permute(out, {0, 2, 1, 3})), {N, T, H * D});
}

}  // namespace

Tensor SiglipEncoderLayer::forward(const Tensor& x, const KernelOptions& kernels, const Tensor& key_mask) const {
  const int64_t N = x.size(0), T = x.size(1), H = config_.num_attention_heads, D = config_.head_dim();
  const Tensor h = layer_norm1_->forward(x);
  auto heads = [&](const std::shared_ptr<Linear>& proj) { return ops::reshape(proj->forward(h), {N, T, H, D}); };
  ops::AttentionOptions options;
  options.causal = false;
  options.scale = 1.0 / std::sqrt(double(D));
  const Tensor q = heads(self_attn_->q_proj), k = heads(self_attn_->k_proj), v = heads(self_attn_->v_proj);
  const Tensor attn = key_mask.defined()        ? masked_attention(q, k, v, key_mask, options.scale)
                      : kernels.flash_attention ? ops::attention(q, k, v, options)
                                                : nn::attention_eager(q, k, v, options);
  const Tensor r = x + self_attn_->out_proj->forward(ops::reshape(attn, {N, T, H * D}));
  const Tensor m = mlp_->fc1->forward(layer_norm2_->forward(r));
  return r + mlp_->fc2->forward(ops::gelu(m, config_.gelu_tanh));
}

SiglipVisionTower::SiglipVisionTower(const SiglipVisionConfig& config, DType dtype) : config_(config), dtype_(dtype) {
  embeddings_ = register_module("embeddings", std::make_shared<Embeddings>(config, dtype));
  encoder_ = register_module("encoder", std::make_shared<Encoder>(config, dtype));
  post_layernorm_ = register_module(
      "post_layernorm", std::make_shared<LayerNorm>(config.hidden_size, config.layer_norm_eps, true, dtype));
}

Tensor SiglipVisionTower::forward(const Tensor& pixel_values, const KernelOptions& kernels) const {
  return forward(pixel_values, Tensor(), Tensor(), kernels);
}

Tensor SiglipVisionTower::forward(const Tensor& pixel_values, const Tensor& position_ids, const Tensor& patch_mask,
                                  const KernelOptions& kernels) const {
  const SiglipVisionConfig& c = config_;
  if (pixel_values.dim() != 4 || pixel_values.size(1) != c.num_channels || pixel_values.size(2) != c.image_size ||
      pixel_values.size(3) != c.image_size)
    throw Error("pixel_values has shape " + shape_str(pixel_values.shape()) + "; the vision tower takes [images, " +
                    std::to_string(c.num_channels) + ", " + std::to_string(c.image_size) + ", " +
                    std::to_string(c.image_size) + "]",
                "pixel_values", "resize images to vision_config.image_size with the model's image processor");
  if (!is_floating(pixel_values.dtype()))
    throw Error("pixel_values must be floating point, got " + pixel_values.describe(), "pixel_values");
  const Embeddings& e = *embeddings_;
  Tensor x = e.patch_embedding->forward(ops::to_dtype(pixel_values, dtype_), c);
  const int64_t N = x.size(0), T = x.size(1);
  if (position_ids.defined()) {
    AM_CHECK(position_ids.shape() == Shape({N, T}), "position_ids must be [", N, ", ", T, "], got ",
             position_ids.describe());
    x = x + e.position_embedding->forward(position_ids);
  } else {
    x = x + e.position_embedding->weight;  // positions 0 .. patches-1, one per patch
  }
  Tensor key_mask;
  if (patch_mask.defined()) {
    AM_CHECK(patch_mask.shape() == Shape({N, T}), "patch_mask must be [", N, ", ", T, "], got ", patch_mask.describe());
    std::vector<float> additive(size_t(N * T));
    const std::vector<double> real = patch_mask.to_doubles();
    for (size_t i = 0; i < additive.size(); ++i)
      additive[i] = real[i] != 0 ? 0.0f : std::numeric_limits<float>::lowest();
    key_mask = Tensor::from_vector(additive, {N, 1, 1, T});
  }
  const auto& layers = *encoder_->layers;
  for (size_t l = 0; l < layers.size(); ++l) x = layers[l].forward(x, kernels, key_mask);
  return post_layernorm_->forward(x);
}

}  // namespace automodel::models
