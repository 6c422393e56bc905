// Llama 2 / 3 / 3.1 / 3.2 (transformers' modeling_llama.py): RMSNorm, SwiGLU, GQA, RoPE with
// linear / dynamic / llama3 scaling; optional attention_bias, mlp_bias and explicit head_dim.
#include "core/error.h"
#include "models/auto_model.h"
#include "models/families.h"

namespace automodel::models {

void register_llama_family() {
  register_family("llama", [](ModelConfig& c) {
    AM_CHECK(c.hidden_act == "silu", "llama with hidden_act '", c.hidden_act, "' is not supported (only silu)");
    return DecoderSpec{};
  });
}

}  // namespace automodel::models
