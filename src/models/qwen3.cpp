// Qwen3 (modeling_qwen3.py): Llama with RMSNorm on each head's queries and keys (q_norm,
// k_norm) before RoPE; attention_bias on all projections when set.
#include "models/auto_model.h"
#include "models/families.h"
#include "models/family_helpers.h"

namespace automodel::models {

void register_qwen3_family() {
  register_family("qwen3", [](ModelConfig& c) {
    require_silu(c, "qwen3");
    apply_qwen_windows(c);
    DecoderSpec spec;
    spec.qk_norm = true;
    return Architecture{.spec = spec, .make_layer = dense_decoder_layer};
  });
}

}  // namespace automodel::models
