// Qwen2 / Qwen2.5 (modeling_qwen2.py): Llama with biases on q/k/v (not o), and sliding-window
// layers from max_window_layers on when use_sliding_window is set.
#include "core/error.h"
#include "models/auto_model.h"
#include "models/families.h"
#include "models/family_helpers.h"
#include "models/layer_types.h"

namespace automodel::models {

void apply_qwen_windows(ModelConfig& c) {
  const bool use = json_get<bool>(c.raw, "use_sliding_window", false, c.source);
  const int64_t window = use ? sliding_window(c, 0) : 0;
  const int64_t first = json_get<int64_t>(c.raw, "max_window_layers", 28, c.source);
  if (first < 0) config_error(c.source, "max_window_layers", "must be >= 0, got " + std::to_string(first));
  apply_layer_types(c, window, [&](int64_t i) { return window > 0 && i >= first; });
}

void register_qwen2_family() {
  register_family("qwen2", [](ModelConfig& c) {
    require_silu(c, "qwen2");
    apply_qwen_windows(c);
    DecoderSpec spec;
    spec.qkv_bias = true;
    return Architecture{.spec = spec, .make_layer = dense_decoder_layer};
  });
}

}  // namespace automodel::models
