// Phi-3 (modeling_phi3.py): Llama-like with fused qkv_proj and gate_up_proj, optional partial
// rotary dims, longrope scaling and a sliding window on every layer when set.
#include "models/auto_model.h"
#include "models/families.h"

namespace automodel::models {

void register_phi3_family() {
  register_family("phi3", [](ModelConfig& c) {
    int64_t window = json_get<int64_t>(c.raw, "sliding_window", 0, "config.json");
    c.layer_windows.assign(size_t(c.num_hidden_layers), window);
    DecoderSpec spec;
    spec.fused_qkv = true;
    spec.fused_gate_up = true;
    return spec;
  });
}

}  // namespace automodel::models
