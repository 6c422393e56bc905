#pragma once
// Per-layer attention windows from config.json's `layer_types` ("full_attention" /
// "sliding_attention") and `sliding_window`, shared by the families that use those keys.
#include <string>

#include "core/error.h"
#include "models/config.h"

namespace automodel::models {

// config.json's `sliding_window` (absent or null: `fallback`); a window must be a positive integer
// (0 would leave a token nothing to attend to).
inline int64_t sliding_window(const ModelConfig& c, int64_t fallback) {
  const int64_t window = json_get<int64_t>(c.raw, "sliding_window", fallback, c.source);
  if (window <= 0 && c.raw.contains("sliding_window") && !c.raw["sliding_window"].is_null())
    config_error(c.source, "sliding_window", "must be a positive integer, got " + std::to_string(window),
                 "use null for full attention in every layer");
  return window;
}

// Sets config.layer_windows: `window` on sliding layers, 0 on full ones. Without `layer_types`,
// `fallback(i)` says whether layer i slides.
template <class Fallback>
void apply_layer_types(ModelConfig& c, int64_t window, Fallback&& fallback) {
  const nlohmann::json* types = nullptr;
  if (c.raw.contains("layer_types") && !c.raw["layer_types"].is_null()) {
    types = &c.raw["layer_types"];
    if (!types->is_array())
      config_error(c.source, "layer_types",
                   "must be a list of \"full_attention\" / \"sliding_attention\", got " + types->dump());
    if (int64_t(types->size()) != c.num_hidden_layers)
      config_error(c.source, "layer_types",
                   "has " + std::to_string(types->size()) + " entries for num_hidden_layers " +
                       std::to_string(c.num_hidden_layers),
                   "give one entry per layer");
  }
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    bool sliding = fallback(i);
    if (types) {
      const nlohmann::json& t = (*types)[size_t(i)];
      const std::string key = "layer_types[" + std::to_string(i) + "]";
      if (t != "full_attention" && t != "sliding_attention")
        config_error(c.source, key, "must be \"full_attention\" or \"sliding_attention\", got " + t.dump(),
                     "other attention kinds are not supported");
      sliding = t == "sliding_attention";
    }
    c.layer_windows[size_t(i)] = sliding ? window : 0;
  }
}

}  // namespace automodel::models
