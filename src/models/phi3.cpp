// Phi-3 (modeling_phi3.py): Llama-like with fused qkv_proj and gate_up_proj, optional partial
// rotary dims, longrope scaling and a sliding window on every layer when set.
#include "models/auto_model.h"
#include "models/families.h"
#include "models/family_helpers.h"
#include "models/layer_types.h"

namespace automodel::models {

void register_phi3_family() {
  register_family("phi3", [](ModelConfig& c) {
    require_silu(c, "phi3");
    c.layer_windows.assign(size_t(c.num_hidden_layers), sliding_window(c, 0));
    DecoderSpec spec;
    spec.fused_qkv = true;
    spec.fused_gate_up = true;
    return Architecture{.spec = spec, .make_layer = dense_decoder_layer};
  });
}

}  // namespace automodel::models
