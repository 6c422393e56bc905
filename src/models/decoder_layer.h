#pragma once
// The blocks a decoder is built from. A family picks, per layer, what CausalLM stacks (a LayerFactory); the
// stock layer is attention + a feed-forward block + RMSNorms, where the feed-forward block is an interface
// (the dense gated MLP today; a mixture of experts plugs in the same way).
#include <functional>
#include <memory>
#include <vector>

#include "models/config.h"
#include "models/language_model.h"
#include "models/rope.h"
#include "nn/linear.h"
#include "nn/module.h"
#include "nn/norm.h"
#include "ops/attention.h"

namespace automodel::models {

enum class MlpActivation { silu, gelu_tanh };

// What varies between the stock layers of the dense families, decided once from the config.
struct DecoderSpec {
  bool fused_qkv = false;         // phi3: self_attn.qkv_proj
  bool qkv_bias = false;          // qwen2: q/k/v projections have biases (o_proj none)
  bool fused_gate_up = false;     // phi3: mlp.gate_up_proj
  bool qk_norm = false;           // qwen3: self_attn.q_norm / k_norm (RMSNorm over head_dim)
  bool norm_unit_offset = false;  // gemma: RMSNorm scales by (1 + w)
  bool scale_embeddings = false;  // gemma: embeddings times sqrt(hidden_size)
  bool sandwich_norms = false;    // gemma2: pre/post_feedforward_layernorm around the MLP
  bool attention_sinks = false;   // gpt_oss: self_attn.sinks, one learned softmax logit per head
  MlpActivation activation = MlpActivation::silu;
  double attention_scale = 0;  // 0: 1/sqrt(head_dim)
};

// Everything a layer needs from the model for one forward pass. Held by value: a checkpointed
// layer replays with it long after forward_hidden has returned.
struct LayerContext {
  Tensor position_ids;
  RopeFrequencies rope;
  Tensor seq_ids;  // undefined: plain causal attention
  KVCache* cache;
  int64_t layer_index;
  KernelOptions kernels;
  Tensor bidirectional_blocks;  // undefined: none (ForwardOptions::bidirectional_blocks)
  bool training = false;        // ForwardOptions::training
};

// The block after attention, registered as the layer's `mlp`.
class FeedForward : public nn::Module {
 public:
  // [B, T, hidden] -> [B, T, hidden]; a block with an auxiliary loss (router load balancing) appends it.
  virtual Tensor forward(const Tensor& h, const LayerContext& ctx, std::vector<Tensor>& aux_losses) const = 0;
};

// gate/up projections, SiLU or GELU-tanh gating, down projection (transformers' LlamaMLP and kin).
class GatedMlp : public FeedForward {
 public:
  GatedMlp(const ModelConfig& c, const DecoderSpec& spec, DType dtype);
  Tensor forward(const Tensor& h, const LayerContext& ctx, std::vector<Tensor>& aux_losses) const override;

  std::shared_ptr<nn::Linear> gate_proj, up_proj, gate_up_proj, down_proj;

 private:
  MlpActivation activation_;
};

// Multi-head attention with grouped KV heads, RoPE, optional q/k norms, window and soft-capping.
class Attention : public nn::Module {
 public:
  Attention(const ModelConfig& c, const DecoderSpec& spec, int64_t window, DType dtype);
  Tensor forward(const Tensor& h, const LayerContext& ctx) const;

  std::shared_ptr<nn::Linear> q_proj, k_proj, v_proj, qkv_proj, o_proj;
  std::shared_ptr<nn::RMSNorm> q_norm, k_norm;
  Tensor sinks;  // [heads] with DecoderSpec::attention_sinks, else undefined

 private:
  int64_t heads_, kv_heads_, head_dim_;
  ops::AttentionOptions options_;
};

// One entry of model.layers.
class DecoderLayer : public nn::Module {
 public:
  // [B, T, hidden] -> [B, T, hidden]; auxiliary losses are appended to aux_losses.
  virtual Tensor forward(const Tensor& x, const LayerContext& ctx, std::vector<Tensor>& aux_losses) const = 0;
};

// The stock layer: input_layernorm, self_attn, post_attention_layernorm, then the feed-forward block
// (gemma2: between pre/post_feedforward_layernorm).
class TransformerLayer : public DecoderLayer {
 public:
  TransformerLayer(const ModelConfig& c, const DecoderSpec& spec, int64_t layer_index, DType dtype,
                   std::shared_ptr<FeedForward> feed_forward);
  Tensor forward(const Tensor& x, const LayerContext& ctx, std::vector<Tensor>& aux_losses) const override;

  std::shared_ptr<Attention> self_attn;
  std::shared_ptr<FeedForward> mlp;
  std::shared_ptr<nn::RMSNorm> input_layernorm, post_attention_layernorm, pre_feedforward_layernorm,
      post_feedforward_layernorm;

 private:
  bool sandwich_;
};

// Builds model.layers[layer_index].
using LayerFactory = std::function<std::shared_ptr<DecoderLayer>(const ModelConfig& config, const DecoderSpec& spec,
                                                                 int64_t layer_index, DType dtype)>;

// The dense families' layer: TransformerLayer with a GatedMlp.
std::shared_ptr<DecoderLayer> dense_decoder_layer(const ModelConfig& config, const DecoderSpec& spec,
                                                  int64_t layer_index, DType dtype);

}  // namespace automodel::models
