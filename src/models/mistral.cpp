// Mistral (modeling_mistral.py): Llama's architecture with a sliding attention window on every
// layer when config.sliding_window is set.
#include "models/auto_model.h"
#include "models/families.h"
#include "models/family_helpers.h"
#include "models/layer_types.h"

namespace automodel::models {

void register_mistral_family() {
  register_family("mistral", [](ModelConfig& c) {
    require_silu(c, "mistral");
    c.layer_windows.assign(size_t(c.num_hidden_layers), sliding_window(c, 0));
    return Architecture{.spec = {}, .make_layer = dense_decoder_layer};
  });
}

}  // namespace automodel::models
