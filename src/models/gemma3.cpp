// Gemma 3's text decoder (modeling_gemma3.py, model_type gemma3_text): Gemma 2's layer (sandwich norms, (1 + w)
// norms, embedding scale, final-logit soft-capping, query_pre_attn_scalar) with (1 + w) RMSNorm on each head's
// queries and keys, sliding-window layers interleaved with global ones (`layer_types`, or the older
// `sliding_window_pattern`: every pattern-th layer is global), and a RoPE of their own for the sliding layers
// (transformers 5's rope_parameters.sliding_attention; older files: rope_local_base_freq).
#include <cmath>
#include <optional>

#include "core/error.h"
#include "models/auto_model.h"
#include "models/families.h"
#include "models/family_helpers.h"
#include "models/layer_types.h"
#include "models/rope.h"

namespace automodel::models {

namespace {

// transformers' Gemma3TextConfig defaults for keys older config.json files leave out.
constexpr double kGlobalRopeTheta = 1'000'000.0, kLocalRopeTheta = 10'000.0;
constexpr double kQueryPreAttnScalar = 256.0;
constexpr int64_t kSlidingWindowPattern = 6, kSlidingWindow = 4096;

// A layer of the stock kind whose sliding-window attention rotates with the local RoPE frequencies.
class Gemma3Layer : public TransformerLayer {
 public:
  Gemma3Layer(const ModelConfig& c, const DecoderSpec& spec, int64_t layer_index, DType dtype,
              std::optional<RopeFrequencies> local_rope)
      : TransformerLayer(c, spec, layer_index, dtype, std::make_shared<GatedMlp>(c, spec, dtype)),
        local_rope_(std::move(local_rope)) {}

  Tensor forward(const Tensor& x, const LayerContext& ctx, std::vector<Tensor>& aux_losses) const override {
    if (!local_rope_) return TransformerLayer::forward(x, ctx, aux_losses);
    LayerContext local = ctx;
    local.rope = *local_rope_;
    return TransformerLayer::forward(x, local, aux_losses);
  }

 private:
  std::optional<RopeFrequencies> local_rope_;
};

// The sliding layers' RoPE: rope_parameters.sliding_attention, or (older files) default RoPE with base
// rope_local_base_freq. The global layers' default base is 1e6 rather than 1e4 in older files too.
void read_local_rope(ModelConfig& c) {
  if (c.sliding_rope) return;  // transformers 5's per-layer-type rope_parameters
  const bool global_theta_given = c.raw.contains("rope_theta") && !c.raw["rope_theta"].is_null();
  const bool grouped = c.raw.contains("rope_parameters") && c.raw["rope_parameters"].is_object() &&
                       c.raw["rope_parameters"].contains("rope_theta");
  if (!global_theta_given && !grouped) c.rope.theta = kGlobalRopeTheta;
  RopeConfig local;
  local.theta = json_get<double>(c.raw, "rope_local_base_freq", kLocalRopeTheta, c.source);
  if (!(local.theta > 0) || !std::isfinite(local.theta))
    config_error(c.source, "rope_local_base_freq",
                 "must be a positive finite number, got " + c.raw["rope_local_base_freq"].dump());
  c.sliding_rope = local;
}

RopeFrequencies local_rope_frequencies(const ModelConfig& c) {
  const RopeConfig& r = *c.sliding_rope;
  if (r.type == "dynamic" || r.type == "longrope")
    config_error(c.source, "rope_parameters.sliding_attention.rope_type",
                 "'" + r.type + "' is not supported for the sliding-window layers",
                 "use default, linear or llama3 RoPE for sliding_attention");
  ModelConfig local = c;
  local.rope = r;
  return rope_frequencies(local, c.max_position_embeddings);
}

}  // namespace

void register_gemma3_text_family() {
  register_family("gemma3_text", [](ModelConfig& c) {
    if (json_get<bool>(c.raw, "use_bidirectional_attention", false, c.source))
      config_error(c.source, "use_bidirectional_attention",
                   "is true (EmbeddingGemma's bidirectional encoder), which is not supported",
                   "load a causal Gemma 3 decoder (use_bidirectional_attention false)");
    c.tie_word_embeddings = json_get<bool>(c.raw, "tie_word_embeddings", true, c.source);
    const int64_t window = sliding_window(c, kSlidingWindow);
    const int64_t pattern = json_get<int64_t>(c.raw, "sliding_window_pattern", kSlidingWindowPattern, c.source);
    if (pattern <= 0)
      config_error(c.source, "sliding_window_pattern", "must be a positive integer, got " + std::to_string(pattern));
    apply_layer_types(c, window, [pattern](int64_t i) { return (i + 1) % pattern != 0; });
    read_local_rope(c);
    // Gemma3Attention never passes attn_logit_softcapping to its attention function: the key is read and
    // ignored, so attention scores are not soft-capped (final_logit_softcapping still applies).
    c.attn_logit_softcapping = 0;
    if (c.query_pre_attn_scalar == 0) c.query_pre_attn_scalar = kQueryPreAttnScalar;
    DecoderSpec spec;
    spec.qk_norm = true;
    spec.norm_unit_offset = true;
    spec.scale_embeddings = true;
    spec.sandwich_norms = true;
    spec.activation = gemma_activation(c);
    spec.attention_scale = 1.0 / std::sqrt(c.query_pre_attn_scalar);
    const RopeFrequencies local = local_rope_frequencies(c);
    LayerFactory make_layer = [local](const ModelConfig& config, const DecoderSpec& layer_spec, int64_t index,
                                      DType dtype) -> std::shared_ptr<DecoderLayer> {
      const bool sliding = config.layer_windows[size_t(index)] > 0;
      return std::make_shared<Gemma3Layer>(config, layer_spec, index, dtype,
                                           sliding ? std::optional<RopeFrequencies>(local) : std::nullopt);
    };
    return Architecture{.spec = spec, .make_layer = make_layer};
  });
}

}  // namespace automodel::models
