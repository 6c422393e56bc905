// Llama 2 / 3 / 3.1 / 3.2 (transformers' modeling_llama.py): RMSNorm, SwiGLU, GQA, RoPE with
// linear / dynamic / llama3 scaling; optional attention_bias, mlp_bias and explicit head_dim.
#include "core/error.h"
#include "models/auto_model.h"
#include "models/families.h"
#include "models/family_helpers.h"

namespace automodel::models {

void require_silu(const ModelConfig& c, const std::string& family) {
  if (c.hidden_act != "silu")
    config_error(c.source, "hidden_act", "'" + c.hidden_act + "' is not supported for " + family,
                 "these families use silu (SwiGLU) here");
}

void register_llama_family() {
  register_family("llama", [](ModelConfig& c) {
    require_silu(c, "llama");
    return Architecture{.spec = {}, .make_layer = dense_decoder_layer};
  });
}

}  // namespace automodel::models
