#include "models/causal_lm.h"

#include <cmath>
#include <cstring>

#include "autograd/layer_hooks.h"
#include "core/grad_node.h"
#include "models/rope.h"
#include "nn/eager.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "ops/concat.h"
#include "ops/loss.h"
#include "ops/matmul.h"
#include "ops/rope.h"
#include "ops/view.h"

namespace automodel::models {

namespace {

using nn::Linear;
using nn::RMSNorm;

// Everything a layer needs from the model for one forward pass. Held by value: a checkpointed
// layer replays with it long after forward_hidden has returned.
struct LayerContext {
  Tensor position_ids;
  RopeFrequencies rope;
  Tensor seq_ids;  // undefined: plain causal attention
  KVCache* cache;
  int64_t layer_index;
  KernelOptions kernels;
};

class Attention : public nn::Module {
 public:
  Attention(const ModelConfig& c, const DecoderSpec& spec, int64_t window, DType dtype)
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
      q_norm = register_module("q_norm", std::make_shared<RMSNorm>(head_dim_, c.rms_norm_eps, false, dtype));
      k_norm = register_module("k_norm", std::make_shared<RMSNorm>(head_dim_, c.rms_norm_eps, false, dtype));
    }
    options_.scale = spec.attention_scale > 0 ? spec.attention_scale : 1.0 / std::sqrt(double(head_dim_));
    options_.window = window;
    options_.softcap = c.attn_logit_softcapping;
  }

  Tensor forward(const Tensor& h, const LayerContext& ctx) const {
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
    Tensor out = ctx.kernels.flash_attention ? ops::attention(q, k, v, options) : nn::attention_eager(q, k, v, options);
    return o_proj->forward(ops::reshape(out, {B, T, heads_ * head_dim_}));
  }

  std::shared_ptr<Linear> q_proj, k_proj, v_proj, qkv_proj, o_proj;
  std::shared_ptr<RMSNorm> q_norm, k_norm;

 private:
  int64_t heads_, kv_heads_, head_dim_;
  ops::AttentionOptions options_;
};

class Mlp : public nn::Module {
 public:
  Mlp(const ModelConfig& c, const DecoderSpec& spec, DType dtype) : activation_(spec.activation) {
    const int64_t I = c.intermediate_size;
    if (spec.fused_gate_up) {
      gate_up_proj = register_module("gate_up_proj", std::make_shared<Linear>(c.hidden_size, 2 * I, c.mlp_bias, dtype));
    } else {
      gate_proj = register_module("gate_proj", std::make_shared<Linear>(c.hidden_size, I, c.mlp_bias, dtype));
      up_proj = register_module("up_proj", std::make_shared<Linear>(c.hidden_size, I, c.mlp_bias, dtype));
    }
    down_proj = register_module("down_proj", std::make_shared<Linear>(I, c.hidden_size, c.mlp_bias, dtype));
  }

  Tensor forward(const Tensor& h, bool fused) const {
    Tensor gate, up;
    if (gate_up_proj) {
      Tensor both = gate_up_proj->forward(h);
      std::vector<Tensor> parts = ops::split(both, {both.size(-1) / 2, both.size(-1) / 2}, -1);
      gate = parts[0], up = parts[1];
    } else {
      gate = gate_proj->forward(h), up = up_proj->forward(h);
    }
    const bool silu = activation_ == MlpActivation::silu;
    Tensor act = fused ? (silu ? ops::swiglu(gate, up) : ops::geglu_tanh(gate, up))
                       : ops::mul(silu ? ops::silu(gate) : ops::gelu(gate, true), up);
    return down_proj->forward(act);
  }

  std::shared_ptr<Linear> gate_proj, up_proj, gate_up_proj, down_proj;

 private:
  MlpActivation activation_;
};

class DecoderLayer : public nn::Module {
 public:
  DecoderLayer(const ModelConfig& c, const DecoderSpec& spec, int64_t window, DType dtype)
      : sandwich_(spec.sandwich_norms) {
    auto norm = [&] { return std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, spec.norm_unit_offset, dtype); };
    self_attn = register_module("self_attn", std::make_shared<Attention>(c, spec, window, dtype));
    mlp = register_module("mlp", std::make_shared<Mlp>(c, spec, dtype));
    input_layernorm = register_module("input_layernorm", norm());
    post_attention_layernorm = register_module("post_attention_layernorm", norm());
    if (sandwich_) {
      pre_feedforward_layernorm = register_module("pre_feedforward_layernorm", norm());
      post_feedforward_layernorm = register_module("post_feedforward_layernorm", norm());
    }
  }

  Tensor forward(const Tensor& x, const LayerContext& ctx) const {
    Tensor attn = self_attn->forward(input_layernorm->forward(x), ctx);
    const bool fused = ctx.kernels.fused;
    if (sandwich_) {
      auto [r, h] = pre_feedforward_layernorm->forward_residual(x, post_attention_layernorm->forward(attn));
      return r + post_feedforward_layernorm->forward(mlp->forward(h, fused));
    }
    auto [r, h] = post_attention_layernorm->forward_residual(x, attn);
    return r + mlp->forward(h, fused);
  }

  std::shared_ptr<Attention> self_attn;
  std::shared_ptr<Mlp> mlp;
  std::shared_ptr<RMSNorm> input_layernorm, post_attention_layernorm, pre_feedforward_layernorm,
      post_feedforward_layernorm;

 private:
  bool sandwich_;
};

class DecoderModel : public nn::Module {
 public:
  DecoderModel(const ModelConfig& c, const DecoderSpec& spec, DType dtype) {
    embed_tokens = register_module("embed_tokens", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size,
                                                                                   c.pad_token_id.value_or(-1), dtype));
    layers = register_module("layers", std::make_shared<nn::ModuleList<DecoderLayer>>());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i)
      layers->append(std::make_shared<DecoderLayer>(c, spec, c.layer_windows[size_t(i)], dtype));
    norm =
        register_module("norm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, spec.norm_unit_offset, dtype));
  }
  std::shared_ptr<nn::Embedding> embed_tokens;
  std::shared_ptr<nn::ModuleList<DecoderLayer>> layers;
  std::shared_ptr<RMSNorm> norm;
};

// Padding as attention groups: real tokens (mask 1) share id 0, padding gets -1, so no real token
// ever attends a padding position.
Tensor seq_ids_from_mask(const Tensor& mask) {
  std::vector<double> m = mask.to_doubles();
  std::vector<int64_t> ids(m.size());
  for (size_t i = 0; i < m.size(); ++i) ids[i] = m[i] != 0 ? 0 : -1;
  return Tensor::from_vector(ids, mask.shape());
}

}  // namespace

struct CausalLM::Impl {
  std::shared_ptr<DecoderModel> model;
  std::shared_ptr<Linear> lm_head;  // null when tied to the embeddings
  RopeFrequencies fixed_rope;       // for rope types that don't depend on the sequence length
  bool rope_depends_on_length = false;
  double embed_scale = 0;  // 0: none
};

CausalLM::CausalLM(ModelConfig config, DecoderSpec spec, DType dtype)
    : config_(std::move(config)), spec_(spec), dtype_(dtype), impl_(std::make_unique<Impl>()) {
  AM_CHECK(int64_t(config_.layer_windows.size()) == config_.num_hidden_layers, "layer_windows has ",
           config_.layer_windows.size(), " entries for ", config_.num_hidden_layers, " layers");
  impl_->model = register_module("model", std::make_shared<DecoderModel>(config_, spec_, dtype));
  if (!config_.tie_word_embeddings)
    impl_->lm_head =
        register_module("lm_head", std::make_shared<Linear>(config_.hidden_size, config_.vocab_size, false, dtype));
  impl_->rope_depends_on_length = config_.rope.type == "dynamic" || config_.rope.type == "longrope";
  impl_->fixed_rope = rope_frequencies(config_, config_.max_position_embeddings);
  if (spec_.scale_embeddings) {
    // transformers multiplies by sqrt(hidden) held in the activations' dtype.
    double s = std::sqrt(double(config_.hidden_size));
    impl_->embed_scale = dtype == DType::bf16 ? double(bf16_to_float(float_to_bf16(float(s)))) : double(float(s));
  }
}

CausalLM::~CausalLM() = default;

Tensor CausalLM::lm_head_weight() const {
  return impl_->lm_head ? impl_->lm_head->weight : impl_->model->embed_tokens->weight;
}

void CausalLM::set_kernels(const KernelOptions& kernels) {
  kernels_ = kernels;
  for (auto& [name, m] : named_modules()) {
    if (auto* norm = dynamic_cast<nn::RMSNorm*>(m)) norm->fused = kernels.fused;
    if (auto* linear = dynamic_cast<nn::Linear*>(m)) linear->fused = kernels.fused;
  }
}

KVCache CausalLM::make_cache(int64_t batch, int64_t capacity) const {
  KVCache cache;
  cache.capacity = capacity;
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    cache.keys.push_back(Tensor::zeros({batch, capacity, config_.num_key_value_heads, config_.head_dim}, dtype_));
    cache.values.push_back(Tensor::zeros({batch, capacity, config_.num_key_value_heads, config_.head_dim}, dtype_));
  }
  return cache;
}

Tensor CausalLM::forward_hidden(const Tensor& input_ids, const ForwardOptions& options) const {
  AM_CHECK(input_ids.dim() == 2, "input_ids must be [batch, seq], got ", input_ids.describe());
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  const int64_t past = options.cache ? options.cache->length : 0;
  if (options.cache)
    AM_CHECK(past + T <= options.cache->capacity, "KV cache holds ", options.cache->capacity,
             " positions; this step needs ", past + T);

  Tensor positions = options.position_ids;
  if (!positions.defined()) {
    std::vector<int64_t> pos(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = past + t;
    positions = Tensor::from_vector(pos, {T});
  }
  RopeFrequencies rope = impl_->fixed_rope;
  if (impl_->rope_depends_on_length) {
    int64_t max_pos = 0;
    for (double p : positions.to_doubles()) max_pos = std::max(max_pos, int64_t(p));
    rope = rope_frequencies(config_, max_pos + 1);
  }
  Tensor seq_ids = options.seq_ids;
  if (options.attention_mask.defined()) {
    AM_CHECK(!seq_ids.defined(), "pass either attention_mask or seq_ids, not both");
    AM_CHECK(options.attention_mask.shape() == Shape({B, past + T}), "attention_mask must be [", B, ", ", past + T,
             "], got ", options.attention_mask.describe());
    seq_ids = seq_ids_from_mask(options.attention_mask);
  }

  Tensor x = impl_->model->embed_tokens->forward(input_ids);
  if (impl_->embed_scale > 0) x = ops::scale(x, impl_->embed_scale);
  const auto& layers = *impl_->model->layers;
  for (size_t l = 0; l < layers.size(); ++l) {
    LayerContext ctx{positions, rope, seq_ids, options.cache, int64_t(l), kernels_};
    const DecoderLayer& layer = layers[l];
    x = autograd::run_layer(
        options.layer_hooks, int64_t(l), x, [&layer, ctx](const Tensor& in) { return layer.forward(in, ctx); },
        options.checkpoint_layers && !options.cache);
  }
  if (options.cache) options.cache->length += T;
  return impl_->model->norm->forward(x);
}

Tensor CausalLM::logits(const Tensor& hidden) const {
  Tensor out = ops::linear(hidden, lm_head_weight());
  if (config_.final_logit_softcapping > 0) out = ops::softcap(out, config_.final_logit_softcapping);
  return out;
}

Tensor causal_lm_loss(const Tensor& logits, const Tensor& labels) {
  AM_CHECK(
      logits.dim() == 3 && labels.dim() == 2 && labels.size(0) == logits.size(0) && labels.size(1) == logits.size(1),
      "causal_lm_loss: logits ", logits.describe(), " and labels ", labels.describe(), " don't match");
  AM_CHECK(labels.dtype() == DType::i64, "causal_lm_loss: labels must be i64, got ", labels.describe());
  const int64_t B = labels.size(0), T = labels.size(1), V = logits.size(2);
  // Position t predicts labels[t + 1]; the last position predicts nothing (-100).
  std::vector<double> l = labels.to_doubles();
  std::vector<int64_t> shifted(static_cast<size_t>(B * T), -100);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t + 1 < T; ++t) shifted[size_t(b * T + t)] = int64_t(l[size_t(b * T + t + 1)]);
  Tensor flat_logits =
      ops::reshape(ops::to_dtype(logits, logits.dtype() == DType::f64 ? DType::f64 : DType::f32), {B * T, V});
  return ops::cross_entropy(flat_logits, Tensor::from_vector(shifted, {B * T}));
}

}  // namespace automodel::models
