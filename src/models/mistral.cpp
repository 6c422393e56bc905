// Mistral (modeling_mistral.py): Llama's architecture with a sliding attention window on every
// layer when config.sliding_window is set.
#include "models/auto_model.h"
#include "models/families.h"

namespace automodel::models {

void register_mistral_family() {
  register_family("mistral", [](ModelConfig& c) {
    int64_t window = json_get<int64_t>(c.raw, "sliding_window", 0, "config.json");
    c.layer_windows.assign(size_t(c.num_hidden_layers), window);
    return DecoderSpec{};
  });
}

}  // namespace automodel::models
