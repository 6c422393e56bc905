// Qwen3-MoE (modeling_qwen3_moe.py): Qwen3's attention (q_norm / k_norm, no biases unless attention_bias) with sparse
// MoE blocks: softmax router, top num_experts_per_tok experts, renormalised when norm_topk_prob. Layer i is sparse
// unless it is listed in mlp_only_layers or (i + 1) is not a multiple of decoder_sparse_step; dense layers use the
// gated MLP of intermediate_size. With use_sliding_window, every layer slides.
#include <set>

#include "models/auto_model.h"
#include "models/families.h"
#include "models/family_helpers.h"
#include "models/layer_types.h"
#include "models/moe_adapter.h"
#include "models/moe_block.h"

namespace automodel::models {

namespace {

// The layers that have experts.
std::set<int64_t> sparse_layers(const ModelConfig& c) {
  std::set<int64_t> dense;
  if (c.raw.contains("mlp_only_layers") && !c.raw["mlp_only_layers"].is_null()) {
    const nlohmann::json& list = c.raw["mlp_only_layers"];
    if (!list.is_array())
      config_error(c.source, "mlp_only_layers", "must be a list of layer indices, got " + list.dump());
    for (const nlohmann::json& v : list) {
      if (!v.is_number_integer())
        config_error(c.source, "mlp_only_layers", "must hold integer layer indices, got " + v.dump());
      dense.insert(v.get<int64_t>());
    }
  }
  const int64_t step = json_get<int64_t>(c.raw, "decoder_sparse_step", 1, c.source);
  if (step <= 0)
    config_error(c.source, "decoder_sparse_step", "must be a positive integer, got " + std::to_string(step));
  std::set<int64_t> sparse;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    if (c.num_experts > 0 && !dense.count(i) && (i + 1) % step == 0) sparse.insert(i);
  return sparse;
}

}  // namespace

void register_qwen3_moe_family() {
  register_family("qwen3_moe", [](ModelConfig& c) {
    require_silu(c, "qwen3_moe");
    const bool sliding = json_get<bool>(c.raw, "use_sliding_window", false, c.source);
    c.layer_windows.assign(size_t(c.num_hidden_layers), sliding ? sliding_window(c, 4096) : 0);
    const MoeOptions options = moe_options(c, json_get<bool>(c.raw, "norm_topk_prob", false, c.source));
    const std::set<int64_t> sparse = sparse_layers(c);
    DecoderSpec spec;
    spec.qk_norm = true;
    auto make_layer = [options, sparse](const ModelConfig& config, const DecoderSpec& s, int64_t layer_index,
                                        DType dtype) -> std::shared_ptr<DecoderLayer> {
      if (!sparse.count(layer_index)) return dense_decoder_layer(config, s, layer_index, dtype);
      return std::make_shared<TransformerLayer>(config, s, layer_index, dtype,
                                                std::make_shared<MoeBlock>(config, options, dtype));
    };
    return Architecture{.spec = spec,
                        .make_layer = make_layer,
                        .state_dict_adapter = std::make_shared<MoeStateDictAdapter>(PerExpertNames{}),
                        .finish_aux_losses = load_balancing_loss(c)};
  });
}

}  // namespace automodel::models
