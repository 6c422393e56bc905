// Gemma (modeling_gemma.py): RMSNorm scaling by (1 + w), embeddings multiplied by
// sqrt(hidden_size), gelu-tanh gated MLP, tied LM head by default.
#include "core/error.h"
#include "models/auto_model.h"
#include "models/families.h"
#include "models/family_helpers.h"

namespace automodel::models {

MlpActivation gemma_activation(const ModelConfig& c) {
  const bool hidden_activation = !json_get<std::string>(c.raw, "hidden_activation", "", c.source).empty();
  const std::string key = hidden_activation ? "hidden_activation" : "hidden_act";
  const std::string act = json_get<std::string>(c.raw, key, "gelu_pytorch_tanh", c.source);
  if (act == "gelu_pytorch_tanh" || act == "gelu_new" || act == "gelu_fast") return MlpActivation::gelu_tanh;
  config_error(c.source, key, "'" + act + "' is not supported for gemma", "supported: gelu_pytorch_tanh");
}

void register_gemma_family() {
  register_family("gemma", [](ModelConfig& c) {
    c.tie_word_embeddings = json_get<bool>(c.raw, "tie_word_embeddings", true, c.source);
    DecoderSpec spec;
    spec.norm_unit_offset = true;
    spec.scale_embeddings = true;
    spec.activation = gemma_activation(c);
    return Architecture{.spec = spec, .make_layer = dense_decoder_layer};
  });
}

}  // namespace automodel::models
