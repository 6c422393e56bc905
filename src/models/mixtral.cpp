// Mixtral (modeling_mixtral.py): Mistral's attention (a sliding window on every layer when sliding_window is set) with
// a sparse MoE block in every layer: softmax router, top num_experts_per_tok experts with their probabilities
// renormalised to sum to 1 (the softmax over the chosen logits). Checkpoints name the block `block_sparse_moe` and
// the experts' projections w1 (gate), w3 (up), w2 (down). router_jitter_noise scales the block's input by uniform
// noise in training steps, as transformers does in training mode.
#include "models/auto_model.h"
#include "models/families.h"
#include "models/family_helpers.h"
#include "models/layer_types.h"
#include "models/moe_adapter.h"
#include "models/moe_block.h"

namespace automodel::models {

void register_mixtral_family() {
  register_family("mixtral", [](ModelConfig& c) {
    require_silu(c, "mixtral");
    if (c.num_experts == 0)
      throw Error("config.json of a mixtral model needs num_local_experts", c.source + ": num_local_experts",
                  "this is not a complete Mixtral config");
    c.moe_intermediate_size = c.intermediate_size;  // Mixtral's experts are intermediate_size wide, whatever else
    c.layer_windows.assign(size_t(c.num_hidden_layers), sliding_window(c, 0));
    MoeOptions options = moe_options(c, true);
    options.jitter_noise = json_get<double>(c.raw, "router_jitter_noise", 0.0, c.source);
    if (!(options.jitter_noise >= 0 && options.jitter_noise < 1))
      config_error(c.source, "router_jitter_noise", "must be in [0, 1) (the noise scales the input by 1 ± it)");
    auto make_layer = [options](const ModelConfig& config, const DecoderSpec& s, int64_t layer_index,
                                DType dtype) -> std::shared_ptr<DecoderLayer> {
      return std::make_shared<TransformerLayer>(config, s, layer_index, dtype,
                                                std::make_shared<MoeBlock>(config, options, dtype));
    };
    return Architecture{.spec = {},
                        .make_layer = make_layer,
                        .state_dict_adapter = std::make_shared<MoeStateDictAdapter>(
                            PerExpertNames{.block = "block_sparse_moe", .gate = "w1", .up = "w3", .down = "w2"}),
                        .finish_aux_losses = load_balancing_loss(c)};
  });
}

}  // namespace automodel::models
