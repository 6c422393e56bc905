#pragma once
// What recipes, generation, checkpoints and adapters need from a language model, whatever its architecture:
// config, dtype, hidden states from token ids or from embeddings, the LM head, a KV cache, kernel choices, the
// Hugging Face tensor layout (StateDictAdapter), and named parameters through nn::Module.
#include <vector>

#include "autograd/layer_hooks.h"
#include "models/config.h"
#include "models/state_dict_adapter.h"
#include "nn/module.h"

namespace automodel::models {

// Keys and values of past positions, per layer, for incremental decoding.
struct KVCache {
  std::vector<Tensor> keys, values;  // per layer [B, capacity, Hkv, D]
  int64_t length = 0;                // positions filled
  int64_t capacity = 0;
};

// Which implementation runs the layers that have a fused kernel (NeMo Automodel's use_liger_kernel,
// transformers' attn_implementation): ours, or transformers' eager composition of primitive ops
// (nn/eager.h), for A/B runs and as an independent check.
struct KernelOptions {
  bool fused = true;            // residual add + RMSNorm, RMSNorm, RoPE, SwiGLU / GeGLU, LoRA linear
  bool flash_attention = true;  // tiled flash attention; false: eager, scores materialised
};

struct ForwardOptions {
  Tensor attention_mask;  // optional [B, T] (1 = token, 0 = padding); with a cache, [B, past + T]
  Tensor position_ids;    // optional [B, T] or [T]; default cache.length + arange(T)
  Tensor seq_ids;         // optional [B, T] packed-sequence ids (attention stays within an id)
  // Optional [B, past + T] i64: runs of positions with the same id >= 0 (one image's tokens) attend to each
  // other both ways on top of causality (transformers' Gemma 3 token_type_ids mask); -1 elsewhere.
  Tensor bidirectional_blocks;
  KVCache* cache = nullptr;
  bool checkpoint_layers = false;  // activation checkpointing per decoder layer
  bool training = false;           // a training step: training-only noise (Mixtral's router jitter) applies
  // Called around each decoder layer's forward and backward (e.g. to gather and reduce per-layer flat buffers).
  std::shared_ptr<const autograd::LayerHooks> layer_hooks;
};

// The decoder's input: token ids, or embeddings already looked up (transformers' inputs_embeds), e.g. text
// embeddings with image features spliced in. Embeddings are used as given: like transformers, Gemma's
// sqrt(hidden) scale belongs to the embedding lookup (LanguageModel::embed), not to inputs_embeds.
struct DecoderInput {
  Tensor input_ids;      // [B, T] i64
  Tensor inputs_embeds;  // [B, T, hidden] in the model's dtype
  // Image-text models (vision_language_model.h) only; a text model refuses them. pixel_values: [images, channels,
  // size, size], the images in the order their image tokens appear; token_type_ids: [B, T], 1 at image tokens (each
  // image's tokens then attend to each other both ways, as transformers does when the processor's are passed).
  Tensor pixel_values, token_type_ids;
  // Idefics 3 / SmolVLM only: [images, height, width] (or [batch, images, height, width] beside 5-D pixel_values), 1 at
  // real pixels and 0 at the padding the processor adds; undefined: every pixel is real.
  Tensor pixel_attention_mask;
  DecoderInput(Tensor ids) : input_ids(std::move(ids)) {}  // NOLINT: implicit, so forward_hidden(ids) reads plainly
  static DecoderInput embeds(Tensor inputs_embeds) {
    DecoderInput in{Tensor()};
    in.inputs_embeds = std::move(inputs_embeds);
    return in;
  }
};

struct DecoderOutput {
  Tensor hidden;                   // after the final norm, [B, T, hidden]
  std::vector<Tensor> aux_losses;  // scalar losses a layer adds to the objective (MoE load balancing); none dense
};

class LanguageModel : public nn::Module {
 public:
  virtual const ModelConfig& config() const = 0;
  virtual DType dtype() const = 0;

  virtual DecoderOutput forward_hidden(const DecoderInput& input, const ForwardOptions& options = {}) const = 0;
  // inputs_embeds for these token ids, as forward_hidden would compute them ([B, T] -> [B, T, hidden]).
  virtual Tensor embed(const Tensor& input_ids) const = 0;
  // LM head (and final soft-capping) on hidden states: [..., vocab].
  virtual Tensor logits(const Tensor& hidden) const = 0;
  Tensor forward(const DecoderInput& input, const ForwardOptions& options = {}) const {
    return logits(forward_hidden(input, options).hidden);
  }
  // The LM head matrix [vocab, hidden] (the embedding matrix when tied).
  virtual Tensor lm_head_weight() const = 0;

  // Applies to every layer, the RMSNorm and Linear (LoRA) modules included; call again after
  // attaching adapters only if they should differ (attach_lora keeps a Linear's setting).
  virtual void set_kernels(const KernelOptions& kernels) = 0;
  virtual const KernelOptions& kernels() const = 0;

  // An empty cache for `batch` sequences of up to `capacity` positions.
  virtual KVCache make_cache(int64_t batch, int64_t capacity) const = 0;

  // Maps our parameter names and tensors to the Hugging Face checkpoint's and back.
  virtual const StateDictAdapter& state_dict_adapter() const = 0;
  // transformers' module path of our parameter `name` (what its named_parameters() and peft adapters use): the name
  // itself, except where the checkpoint names differ from the modules (image-text models).
  virtual std::string module_name(const std::string& name) const { return name; }
  // Our name of decoder layer l's module: "model.layers.<l>" (an image-text model's decoder sits under a prefix).
  virtual std::string decoder_layer_name(int64_t l) const { return "model.layers." + std::to_string(l); }
};

}  // namespace automodel::models
