#pragma once
// Per-layer attention windows from config.json's `layer_types` ("full_attention" /
// "sliding_attention"), shared by the families that use that key.
#include <string>

#include "core/error.h"
#include "models/config.h"

namespace automodel::models {

// Sets config.layer_windows: `window` on sliding layers, 0 on full ones. Without `layer_types`,
// `fallback(i)` says whether layer i slides.
template <class Fallback>
void apply_layer_types(ModelConfig& c, int64_t window, Fallback&& fallback) {
  const nlohmann::json* types =
      c.raw.contains("layer_types") && c.raw["layer_types"].is_array() ? &c.raw["layer_types"] : nullptr;
  if (types && int64_t(types->size()) != c.num_hidden_layers)
    throw Error("config.json layer_types has " + std::to_string(types->size()) + " entries for " +
                    std::to_string(c.num_hidden_layers) + " layers",
                "config.json");
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    bool sliding = types ? (*types)[size_t(i)].get<std::string>() == "sliding_attention" : fallback(i);
    c.layer_windows[size_t(i)] = sliding ? window : 0;
  }
}

}  // namespace automodel::models
