// GPT-OSS (modeling_gpt_oss.py): attention with biases on q/k/v/o and one learned sink logit per head
// (self_attn.sinks), sliding-window and full layers as layer_types says (alternating, sliding first, without it),
// YaRN RoPE; every layer's feed-forward block is a mixture of experts: a router with a bias, the top
// num_experts_per_tok logits softmaxed among themselves, and experts with biases and a clamped SwiGLU over
// interleaved gate/up columns. The experts' tensors are grouped, [in, out] per expert (gate_up_proj [E, H, 2I],
// down_proj [E, I, H]), and checkpoints hold them so, or quantized as MXFP4 blocks and scales (io/mxfp4.h), which load
// dequantized; saving writes the dequantized tensors without the quantization_config.
#include <cmath>

#include "io/mxfp4.h"
#include "models/auto_model.h"
#include "models/families.h"
#include "models/layer_types.h"
#include "models/moe_block.h"
#include "nn/linear.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "ops/clamped_swiglu.h"
#include "ops/embedding.h"
#include "ops/moe_permute.h"
#include "ops/softmax.h"
#include "ops/topk.h"
#include "ops/view.h"

namespace automodel::models {

namespace {

struct GptOssOptions {
  int64_t num_experts = 0, top_k = 0, intermediate_size = 0;
  double alpha = 1.702, limit = 7.0;  // swiglu_alpha, swiglu_limit
  bool output_router_logits = false;
};

// GptOssExperts: the grouped weights (transposed, [in, out] per expert) and one bias row per expert and projection.
class GptOssExperts : public GroupedExperts {
 public:
  GptOssExperts(int64_t num_experts, int64_t hidden, int64_t intermediate, DType dtype)
      : GroupedExperts(num_experts, hidden, intermediate, dtype, true) {
    gate_up_proj_bias = Tensor::zeros({num_experts, 2 * intermediate}, dtype);
    down_proj_bias = Tensor::zeros({num_experts, hidden}, dtype);
    gate_up_proj_bias.set_requires_grad(true);
    down_proj_bias.set_requires_grad(true);
    register_parameter("gate_up_proj_bias", &gate_up_proj_bias);
    register_parameter("down_proj_bias", &down_proj_bias);
  }
  Tensor gate_up_proj_bias;  // [E, 2I], interleaved as gate_up_proj's columns
  Tensor down_proj_bias;     // [E, H]
};

// GptOssMLP: `router` (a linear layer with a bias) and `experts`.
class GptOssMlp : public FeedForward {
 public:
  GptOssMlp(const ModelConfig& c, const GptOssOptions& options, DType dtype) : options_(options) {
    router = register_module("router", std::make_shared<nn::Linear>(c.hidden_size, options.num_experts, true, dtype));
    experts = register_module("experts", std::make_shared<GptOssExperts>(options.num_experts, c.hidden_size,
                                                                         options.intermediate_size, dtype));
  }

  Tensor forward(const Tensor& h, const LayerContext& ctx, std::vector<Tensor>& aux_losses) const override {
    const int64_t hidden = h.size(-1), tokens = h.numel() / hidden, E = options_.num_experts;
    Tensor x = ops::reshape(h, {tokens, hidden});
    // transformers: top-k over the logits, then the softmax over the k chosen, both in the activations' dtype.
    Tensor logits = router->forward(x);
    ops::TopK top = ops::topk(logits, options_.top_k);
    Tensor weights = ops::softmax(top.values, -1);

    ops::MoeRouting routing = ops::moe_routing(top.indices, E);
    Tensor expert_of_row = expert_of_rows(routing.counts);
    Tensor rows = ops::moe_permute(x, routing);
    Tensor gate_up = experts->project(ExpertProjection::gate_up, rows, routing.counts) +
                     ops::embedding(expert_of_row, experts->gate_up_proj_bias);
    Tensor act = ops::clamped_swiglu(gate_up, options_.alpha, options_.limit);
    Tensor down = experts->project(ExpertProjection::down, act, routing.counts) +
                  ops::embedding(expert_of_row, experts->down_proj_bias);
    Tensor out = ops::moe_unpermute(down, weights, routing);

    if (options_.output_router_logits && !ctx.cache) {
      // load_balancing_loss_func: the softmax over all the router's logits, in fp32.
      Tensor probs = ops::softmax(ops::to_dtype(logits, DType::f32), -1);
      aux_losses.push_back(router_statistics(probs, top.indices, ctx.seq_ids, E));
    }
    return ops::reshape(out, h.shape());
  }

  std::shared_ptr<nn::Linear> router;
  std::shared_ptr<GptOssExperts> experts;

 private:
  // The expert of each row in expert order (counts[e] rows of expert e), to look up the experts' biases.
  static Tensor expert_of_rows(const Tensor& counts) {
    const std::vector<double> c = counts.to_doubles();
    std::vector<int64_t> ids;
    for (size_t e = 0; e < c.size(); ++e) ids.insert(ids.end(), size_t(c[e]), int64_t(e));
    return Tensor::from_vector(ids, {int64_t(ids.size())});
  }

  GptOssOptions options_;
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Checkpoints hold every tensor under our names; the experts' weights may instead be MXFP4 `<name>_blocks`
// [E, out, in / 32, 16] and `<name>_scales` [E, out, in / 32] (per expert [out, in], the transpose of ours).
class GptOssStateDictAdapter : public StateDictAdapter {
 public:
  std::vector<std::vector<HfTensorSpec>> hf_read_layouts(const std::string& name, const Shape& shape) const override {
    std::vector<std::vector<HfTensorSpec>> layouts = {hf_layout(name, shape)};
    const bool expert_weight = ends_with(name, "mlp.experts.gate_up_proj") || ends_with(name, "mlp.experts.down_proj");
    if (expert_weight && shape.size() == 3 && shape[1] % 32 == 0) {
      const int64_t E = shape[0], in = shape[1], out = shape[2];
      layouts.push_back({{name + "_blocks", {E, out, in / 32, 16}, true}, {name + "_scales", {E, out, in / 32}, true}});
    }
    return layouts;
  }

  Tensor from_hf(const std::string& name, std::vector<Tensor> parts) const override {
    if (parts.size() != 2) return StateDictAdapter::from_hf(name, std::move(parts));
    // MXFP4: dequantized in fp32 (exact: every value is a small power-of-two multiple), per expert [out, in].
    Tensor dequantized = io::dequantize_mxfp4(parts[0], parts[1], DType::f32, name + "_blocks / " + name + "_scales");
    return ops::transpose(dequantized, 1, 2);
  }
};

// quantization_config: none, or MXFP4 (dequantized on load); anything else is an Error.
void check_quantization(const ModelConfig& c) {
  auto it = c.raw.find("quantization_config");
  if (it == c.raw.end() || it->is_null()) return;
  if (!it->is_object()) config_error(c.source, "quantization_config", "must be an object, got " + it->dump());
  const std::string method = json_get<std::string>(*it, "quant_method", "", c.source);
  if (method != "mxfp4")
    config_error(c.source, "quantization_config.quant_method",
                 "'" + method + "' is not supported for gpt_oss (only mxfp4, which loads dequantized)",
                 "dequantize the checkpoint with transformers first, or use the MXFP4 original");
}

// transformers' GptOssConfig defaults for RoPE when config.json has no rope_parameters (it always writes them).
void default_rope(ModelConfig& c) {
  if (c.raw.contains("rope_parameters") || c.raw.contains("rope_scaling") || c.raw.contains("rope_theta")) return;
  c.rope.type = "yarn";
  c.rope.theta = 150000.0;
  c.rope.factor = 32.0;
  c.rope.beta_fast = 32.0, c.rope.beta_slow = 1.0;
  c.rope.truncate = false;
  c.rope.original_max_position_embeddings = 4096;
}

}  // namespace

void register_gpt_oss_family() {
  register_family("gpt_oss", [](ModelConfig& c) {
    if (c.num_experts == 0)
      throw Error("config.json of a gpt_oss model needs num_local_experts", c.source + ": num_local_experts",
                  "this is not a complete GPT-OSS config");
    check_quantization(c);
    c.raw.erase("quantization_config");                              // the experts load dequantized, and save so
    if (!c.raw.contains("attention_bias")) c.attention_bias = true;  // GptOssConfig's default
    default_rope(c);
    c.moe_intermediate_size = c.intermediate_size;  // the experts are intermediate_size wide
    c.layer_windows.assign(size_t(c.num_hidden_layers), 0);
    apply_layer_types(c, sliding_window(c, 128), [](int64_t i) { return i % 2 == 0; });
    GptOssOptions options;
    options.num_experts = c.num_experts;
    options.top_k = c.num_experts_per_tok;
    options.intermediate_size = c.intermediate_size;
    options.alpha = json_get<double>(c.raw, "swiglu_alpha", 1.702, c.source);
    options.limit = json_get<double>(c.raw, "swiglu_limit", 7.0, c.source);
    options.output_router_logits = json_get<bool>(c.raw, "output_router_logits", false, c.source);
    if (!std::isfinite(options.alpha)) config_error(c.source, "swiglu_alpha", "must be a finite number");
    if (!(options.limit > 0) || !std::isfinite(options.limit))
      config_error(c.source, "swiglu_limit", "must be a positive finite number");
    DecoderSpec spec;
    spec.attention_sinks = true;
    auto make_layer = [options](const ModelConfig& config, const DecoderSpec& s, int64_t layer_index,
                                DType dtype) -> std::shared_ptr<DecoderLayer> {
      return std::make_shared<TransformerLayer>(config, s, layer_index, dtype,
                                                std::make_shared<GptOssMlp>(config, options, dtype));
    };
    return Architecture{.spec = spec,
                        .make_layer = make_layer,
                        .state_dict_adapter = std::make_shared<GptOssStateDictAdapter>(),
                        .finish_aux_losses = load_balancing_loss(c)};
  });
}

}  // namespace automodel::models
