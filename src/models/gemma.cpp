// Gemma (modeling_gemma.py): RMSNorm scaling by (1 + w), embeddings multiplied by
// sqrt(hidden_size), gelu-tanh gated MLP, tied LM head by default.
#include "core/error.h"
#include "models/auto_model.h"
#include "models/families.h"

namespace automodel::models {

// Gemma's config names its MLP activation `hidden_activation` (older files: `hidden_act`).
MlpActivation gemma_activation(const ModelConfig& c) {
  std::string act = json_get<std::string>(c.raw, "hidden_activation", "", "config.json");
  if (act.empty()) act = json_get<std::string>(c.raw, "hidden_act", "gelu_pytorch_tanh", "config.json");
  if (act == "gelu_pytorch_tanh" || act == "gelu_new" || act == "gelu_fast") return MlpActivation::gelu_tanh;
  throw Error("gemma MLP activation '" + act + "' is not supported", "config.json", "supported: gelu_pytorch_tanh");
}

void register_gemma_family() {
  register_family("gemma", [](ModelConfig& c) {
    c.tie_word_embeddings = json_get<bool>(c.raw, "tie_word_embeddings", true, "config.json");
    DecoderSpec spec;
    spec.norm_unit_offset = true;
    spec.scale_embeddings = true;
    spec.activation = gemma_activation(c);
    return spec;
  });
}

}  // namespace automodel::models
