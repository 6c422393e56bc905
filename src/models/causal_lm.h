#pragma once
// The decoder-only transformer behind every supported family: embeddings, N decoder layers
// (attention + gated MLP), final norm and LM head. A family file (llama.cpp, gemma2.cpp, ...)
// turns a config.json into a DecoderSpec; parameter names are Hugging Face's, so state dicts
// load and save name for name.
#include <memory>
#include <vector>

#include "autograd/layer_hooks.h"
#include "models/config.h"
#include "nn/embedding.h"
#include "nn/linear.h"
#include "nn/module.h"
#include "nn/norm.h"

namespace automodel::models {

enum class MlpActivation { silu, gelu_tanh };

// What varies between families, decided once from the config.
struct DecoderSpec {
  bool fused_qkv = false;         // phi3: self_attn.qkv_proj
  bool qkv_bias = false;          // qwen2: q/k/v projections have biases (o_proj none)
  bool fused_gate_up = false;     // phi3: mlp.gate_up_proj
  bool qk_norm = false;           // qwen3: self_attn.q_norm / k_norm (RMSNorm over head_dim)
  bool norm_unit_offset = false;  // gemma: RMSNorm scales by (1 + w)
  bool scale_embeddings = false;  // gemma: embeddings times sqrt(hidden_size)
  bool sandwich_norms = false;    // gemma2: pre/post_feedforward_layernorm around the MLP
  MlpActivation activation = MlpActivation::silu;
  double attention_scale = 0;  // 0: 1/sqrt(head_dim)
};

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
  KVCache* cache = nullptr;
  bool checkpoint_layers = false;  // activation checkpointing per decoder layer
  // Called around each decoder layer's forward and backward (e.g. to gather and reduce per-layer flat buffers).
  std::shared_ptr<const autograd::LayerHooks> layer_hooks;
};

class CausalLM : public nn::Module {
 public:
  CausalLM(ModelConfig config, DecoderSpec spec, DType dtype);
  ~CausalLM() override;

  const ModelConfig& config() const { return config_; }
  const DecoderSpec& spec() const { return spec_; }
  DType dtype() const { return dtype_; }

  // Hidden states after the final norm, [B, T, hidden].
  Tensor forward_hidden(const Tensor& input_ids, const ForwardOptions& options = {}) const;
  // LM head (and final soft-capping) on hidden states: [..., vocab].
  Tensor logits(const Tensor& hidden) const;
  Tensor forward(const Tensor& input_ids, const ForwardOptions& options = {}) const {
    return logits(forward_hidden(input_ids, options));
  }
  // The LM head matrix [vocab, hidden] (the embedding matrix when tied).
  Tensor lm_head_weight() const;

  // Applies to every layer, the RMSNorm and Linear (LoRA) modules included; call again after
  // attaching adapters only if they should differ (attach_lora keeps a Linear's setting).
  void set_kernels(const KernelOptions& kernels);
  const KernelOptions& kernels() const { return kernels_; }

  // An empty cache for `batch` sequences of up to `capacity` positions.
  KVCache make_cache(int64_t batch, int64_t capacity) const;

 private:
  struct Impl;
  ModelConfig config_;
  DecoderSpec spec_;
  DType dtype_;
  KernelOptions kernels_;
  std::unique_ptr<Impl> impl_;
};

// transformers' causal-LM loss: logits[:, :-1] against labels[:, 1:], mean over labels != -100.
Tensor causal_lm_loss(const Tensor& logits, const Tensor& labels);

}  // namespace automodel::models
