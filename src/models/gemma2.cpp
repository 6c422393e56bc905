// Gemma 2 (modeling_gemma2.py): Gemma plus attention and final-logit soft-capping, norms before
// and after the MLP, sliding-window attention on alternating layers, and attention scaled by
// query_pre_attn_scalar^-1/2.
#include <cmath>

#include "models/auto_model.h"
#include "models/families.h"
#include "models/family_helpers.h"
#include "models/layer_types.h"

namespace automodel::models {

void register_gemma2_family() {
  register_family("gemma2", [](ModelConfig& c) {
    c.tie_word_embeddings = json_get<bool>(c.raw, "tie_word_embeddings", true, c.source);
    const int64_t window = sliding_window(c, 4096);
    apply_layer_types(c, window, [](int64_t i) { return i % 2 == 0; });
    DecoderSpec spec;
    spec.norm_unit_offset = true;
    spec.scale_embeddings = true;
    spec.sandwich_norms = true;
    spec.activation = gemma_activation(c);
    const double scalar = c.query_pre_attn_scalar > 0 ? c.query_pre_attn_scalar : double(c.head_dim);
    spec.attention_scale = 1.0 / std::sqrt(scalar);
    return Architecture{.spec = spec, .make_layer = dense_decoder_layer};
  });
}

}  // namespace automodel::models
