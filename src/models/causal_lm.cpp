#include "models/causal_lm.h"

#include <algorithm>
#include <cmath>

#include "autograd/layer_hooks.h"
#include "models/rope.h"
#include "nn/embedding.h"
#include "ops/activation.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "ops/loss.h"
#include "ops/matmul.h"
#include "ops/view.h"

namespace automodel::models {

namespace {

using nn::Linear;
using nn::RMSNorm;

class DecoderModel : public nn::Module {
 public:
  DecoderModel(const ModelConfig& c, const Architecture& arch, DType dtype) {
    embed_tokens = register_module("embed_tokens", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size,
                                                                                   c.pad_token_id.value_or(-1), dtype));
    layers = register_module("layers", std::make_shared<nn::ModuleList<DecoderLayer>>());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      std::shared_ptr<DecoderLayer> layer = arch.make_layer(c, arch.spec, i, dtype);
      AM_CHECK(layer, "the layer factory built no layer ", i);
      layers->append(std::move(layer));
    }
    norm = register_module("norm",
                           std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, arch.spec.norm_unit_offset, dtype));
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

CausalLM::CausalLM(ModelConfig config, Architecture architecture, DType dtype)
    : config_(std::move(config)),
      architecture_(std::move(architecture)),
      dtype_(dtype),
      impl_(std::make_unique<Impl>()) {
  AM_CHECK(architecture_.make_layer && architecture_.state_dict_adapter,
           "an Architecture needs a layer factory and a state dict adapter");
  AM_CHECK(int64_t(config_.layer_windows.size()) == config_.num_hidden_layers, "layer_windows has ",
           config_.layer_windows.size(), " entries for ", config_.num_hidden_layers, " layers");
  impl_->model = register_module("model", std::make_shared<DecoderModel>(config_, architecture_, dtype));
  if (!config_.tie_word_embeddings)
    impl_->lm_head =
        register_module("lm_head", std::make_shared<Linear>(config_.hidden_size, config_.vocab_size, false, dtype));
  impl_->rope_depends_on_length = config_.rope.type == "dynamic" || config_.rope.type == "longrope";
  impl_->fixed_rope = rope_frequencies(config_, config_.max_position_embeddings);
  if (architecture_.spec.scale_embeddings) {
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

Tensor CausalLM::embed(const Tensor& input_ids) const {
  AM_CHECK(input_ids.dim() == 2, "input_ids must be [batch, seq], got ", input_ids.describe());
  Tensor x = impl_->model->embed_tokens->forward(input_ids);
  return impl_->embed_scale > 0 ? ops::scale(x, impl_->embed_scale) : x;
}

DecoderOutput CausalLM::forward_hidden(const DecoderInput& input, const ForwardOptions& options) const {
  AM_CHECK(input.input_ids.defined() != input.inputs_embeds.defined(),
           "pass either input_ids or inputs_embeds, not both or neither");
  if (input.pixel_values.defined() || input.token_type_ids.defined())
    throw Error("a " + config_.model_type + " causal LM takes no images (pixel_values / token_type_ids)", "model input",
                "fine-tune an image-text model (model._target_: NeMoAutoModelForImageTextToText) for image data");
  const Tensor& embeds = input.inputs_embeds;
  if (embeds.defined()) {
    AM_CHECK(embeds.dim() == 3 && embeds.size(2) == config_.hidden_size, "inputs_embeds must be [batch, seq, ",
             config_.hidden_size, "], got ", embeds.describe());
    AM_CHECK(embeds.dtype() == dtype_, "inputs_embeds must be ", dtype_name(dtype_), " like the model, got ",
             embeds.describe());
  } else {
    AM_CHECK(input.input_ids.dim() == 2, "input_ids must be [batch, seq], got ", input.input_ids.describe());
  }
  const Tensor& shaped = embeds.defined() ? embeds : input.input_ids;
  const int64_t B = shaped.size(0), T = shaped.size(1);
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
  if (options.bidirectional_blocks.defined())
    AM_CHECK(options.bidirectional_blocks.shape() == Shape({B, past + T}), "bidirectional_blocks must be [", B, ", ",
             past + T, "], got ", options.bidirectional_blocks.describe());

  Tensor x = embeds.defined() ? embeds : embed(input.input_ids);
  DecoderOutput out;
  const auto& layers = *impl_->model->layers;
  for (size_t l = 0; l < layers.size(); ++l) {
    LayerContext ctx{positions,       rope, seq_ids, options.cache, int64_t(l), kernels_, options.bidirectional_blocks,
                     options.training};
    const DecoderLayer& layer = layers[l];
    x = autograd::run_layer(
        options.layer_hooks, int64_t(l), x,
        [&layer, ctx](const Tensor& in, std::vector<Tensor>& aux) { return layer.forward(in, ctx, aux); },
        options.checkpoint_layers && !options.cache, out.aux_losses);
  }
  if (options.cache) options.cache->length += T;
  if (architecture_.finish_aux_losses) out.aux_losses = architecture_.finish_aux_losses(std::move(out.aux_losses));
  out.hidden = impl_->model->norm->forward(x);
  return out;
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
