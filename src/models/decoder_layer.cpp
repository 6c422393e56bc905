#include "models/decoder_layer.h"

#include <cmath>

#include "nn/eager.h"
#include "ops/activation.h"
#include "ops/binary.h"
#include "ops/concat.h"
#include "ops/rope.h"
#include "ops/view.h"

namespace automodel::models {

using nn::Linear;
using nn::RMSNorm;

Attention::Attention(const ModelConfig& c, const DecoderSpec& spec, int64_t window, DType dtype)
    : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim) {
  const int64_t q_out = heads_ * head_dim_, kv_out = kv_heads_ * head_dim_;
  if (spec.fused_qkv) {
    qkv_proj = register_module("qkv_proj", std::make_shared<Linear>(c.hidden_size, q_out + 2 * kv_out, false, dtype));
  } else {
    const bool qkv_bias = c.attention_bias || spec.qkv_bias;
    q_proj = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, q_out, qkv_bias, dtype));
    k_proj = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, kv_out, qkv_bias, dtype));
    v_proj = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, kv_out, qkv_bias, dtype));
  }
  o_proj = register_module("o_proj", std::make_shared<Linear>(q_out, c.hidden_size, c.attention_bias, dtype));
  if (spec.qk_norm) {
    q_norm =
        register_module("q_norm", std::make_shared<RMSNorm>(head_dim_, c.rms_norm_eps, spec.norm_unit_offset, dtype));
    k_norm =
        register_module("k_norm", std::make_shared<RMSNorm>(head_dim_, c.rms_norm_eps, spec.norm_unit_offset, dtype));
  }
  if (spec.attention_sinks) {
    sinks = Tensor::zeros({heads_}, dtype);
    sinks.set_requires_grad(true);
    register_parameter("sinks", &sinks);
  }
  options_.scale = spec.attention_scale > 0 ? spec.attention_scale : 1.0 / std::sqrt(double(head_dim_));
  options_.window = window;
  options_.softcap = c.attn_logit_softcapping;
}

Tensor Attention::forward(const Tensor& h, const LayerContext& ctx) const {
  const int64_t B = h.size(0), T = h.size(1);
  Tensor q, k, v;
  if (qkv_proj) {
    std::vector<Tensor> parts =
        ops::split(qkv_proj->forward(h), {heads_ * head_dim_, kv_heads_ * head_dim_, kv_heads_ * head_dim_}, -1);
    q = parts[0], k = parts[1], v = parts[2];
  } else {
    q = q_proj->forward(h), k = k_proj->forward(h), v = v_proj->forward(h);
  }
  q = ops::reshape(q, {B, T, heads_, head_dim_});
  k = ops::reshape(k, {B, T, kv_heads_, head_dim_});
  v = ops::reshape(v, {B, T, kv_heads_, head_dim_});
  if (q_norm) {
    q = q_norm->forward(q);
    k = k_norm->forward(k);
  }
  auto rope = [&](const Tensor& x) {
    return ctx.kernels.fused
               ? ops::rope(x, ctx.position_ids, ctx.rope.inv_freq, ops::RopeStyle::half, ctx.rope.attention_scaling)
               : nn::rope_eager(x, ctx.position_ids, ctx.rope.inv_freq, ctx.rope.attention_scaling);
  };
  q = rope(q);
  k = rope(k);
  if (ctx.cache) {
    KVCache& cache = *ctx.cache;
    const size_t l = size_t(ctx.layer_index);
    ops::copy_into(ops::narrow(cache.keys[l], 1, cache.length, T), k.detach());
    ops::copy_into(ops::narrow(cache.values[l], 1, cache.length, T), v.detach());
    k = ops::narrow(cache.keys[l], 1, 0, cache.length + T);
    v = ops::narrow(cache.values[l], 1, 0, cache.length + T);
  }
  ops::AttentionOptions options = options_;
  options.seq_ids = ctx.seq_ids;
  options.bidirectional_blocks = ctx.bidirectional_blocks;
  options.sinks = sinks;
  Tensor out = ctx.kernels.flash_attention ? ops::attention(q, k, v, options) : nn::attention_eager(q, k, v, options);
  return o_proj->forward(ops::reshape(out, {B, T, heads_ * head_dim_}));
}

GatedMlp::GatedMlp(const ModelConfig& c, const DecoderSpec& spec, DType dtype) : activation_(spec.activation) {
  const int64_t I = c.intermediate_size;
  if (spec.fused_gate_up) {
    gate_up_proj = register_module("gate_up_proj", std::make_shared<Linear>(c.hidden_size, 2 * I, c.mlp_bias, dtype));
  } else {
    gate_proj = register_module("gate_proj", std::make_shared<Linear>(c.hidden_size, I, c.mlp_bias, dtype));
    up_proj = register_module("up_proj", std::make_shared<Linear>(c.hidden_size, I, c.mlp_bias, dtype));
  }
  down_proj = register_module("down_proj", std::make_shared<Linear>(I, c.hidden_size, c.mlp_bias, dtype));
}

Tensor GatedMlp::forward(const Tensor& h, const LayerContext& ctx, std::vector<Tensor>&) const {
  Tensor gate, up;
  if (gate_up_proj) {
    Tensor both = gate_up_proj->forward(h);
    std::vector<Tensor> parts = ops::split(both, {both.size(-1) / 2, both.size(-1) / 2}, -1);
    gate = parts[0], up = parts[1];
  } else {
    gate = gate_proj->forward(h), up = up_proj->forward(h);
  }
  const bool silu = activation_ == MlpActivation::silu;
  Tensor act = ctx.kernels.fused ? (silu ? ops::swiglu(gate, up) : ops::geglu_tanh(gate, up))
                                 : ops::mul(silu ? ops::silu(gate) : ops::gelu(gate, true), up);
  return down_proj->forward(act);
}

TransformerLayer::TransformerLayer(const ModelConfig& c, const DecoderSpec& spec, int64_t layer_index, DType dtype,
                                   std::shared_ptr<FeedForward> feed_forward)
    : sandwich_(spec.sandwich_norms) {
  AM_CHECK(feed_forward, "layer ", layer_index, " needs a feed-forward block");
  auto norm = [&] { return std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, spec.norm_unit_offset, dtype); };
  self_attn =
      register_module("self_attn", std::make_shared<Attention>(c, spec, c.layer_windows[size_t(layer_index)], dtype));
  mlp = register_module("mlp", std::move(feed_forward));
  input_layernorm = register_module("input_layernorm", norm());
  post_attention_layernorm = register_module("post_attention_layernorm", norm());
  if (sandwich_) {
    pre_feedforward_layernorm = register_module("pre_feedforward_layernorm", norm());
    post_feedforward_layernorm = register_module("post_feedforward_layernorm", norm());
  }
}

Tensor TransformerLayer::forward(const Tensor& x, const LayerContext& ctx, std::vector<Tensor>& aux_losses) const {
  Tensor attn = self_attn->forward(input_layernorm->forward(x), ctx);
  if (sandwich_) {
    auto [r, h] = pre_feedforward_layernorm->forward_residual(x, post_attention_layernorm->forward(attn));
    return r + post_feedforward_layernorm->forward(mlp->forward(h, ctx, aux_losses));
  }
  auto [r, h] = post_attention_layernorm->forward_residual(x, attn);
  return r + mlp->forward(h, ctx, aux_losses);
}

std::shared_ptr<DecoderLayer> dense_decoder_layer(const ModelConfig& config, const DecoderSpec& spec,
                                                  int64_t layer_index, DType dtype) {
  return std::make_shared<TransformerLayer>(config, spec, layer_index, dtype,
                                            std::make_shared<GatedMlp>(config, spec, dtype));
}

}  // namespace automodel::models
