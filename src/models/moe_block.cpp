#include "models/moe_block.h"

#include <cmath>

#include "nn/init.h"
#include "ops/activation.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "ops/concat.h"
#include "ops/grouped_gemm.h"
#include "ops/moe_permute.h"
#include "ops/reduce.h"
#include "ops/softmax.h"
#include "ops/topk.h"
#include "ops/view.h"

namespace automodel::models {

MoeOptions moe_options(const ModelConfig& c, bool norm_topk_prob) {
  MoeOptions o;
  o.num_experts = c.num_experts;
  o.top_k = c.num_experts_per_tok;
  o.intermediate_size = c.moe_intermediate_size;
  o.norm_topk_prob = norm_topk_prob;
  o.output_router_logits = json_get<bool>(c.raw, "output_router_logits", false, c.source);
  return o;
}

GroupedExperts::GroupedExperts(int64_t num_experts, int64_t hidden, int64_t intermediate, DType dtype) {
  // As nn.Linear initialises each expert's projections (a model from config is re-initialised by from_config).
  auto make = [&](const Shape& shape, int64_t fan_in) {
    const double bound = 1.0 / std::sqrt(double(fan_in));
    Tensor t = nn::init_enabled() ? rand_uniform(shape, -bound, bound, default_generator(), dtype)
                                  : Tensor::empty(shape, dtype);
    t.set_requires_grad(true);
    return t;
  };
  gate_up_proj = make({num_experts, 2 * intermediate, hidden}, hidden);
  down_proj = make({num_experts, hidden, intermediate}, intermediate);
  register_parameter("gate_up_proj", &gate_up_proj);
  register_parameter("down_proj", &down_proj);
}

MoeBlock::MoeBlock(const ModelConfig& c, const MoeOptions& options, DType dtype) : options_(options) {
  AM_CHECK(options.num_experts > 0 && options.top_k > 0 && options.top_k <= options.num_experts,
           "a MoE block needs 1 <= top_k <= num_experts, got top_k ", options.top_k, " of ", options.num_experts);
  gate = register_module("gate", std::make_shared<nn::Linear>(c.hidden_size, options.num_experts, false, dtype));
  experts = register_module("experts", std::make_shared<GroupedExperts>(options.num_experts, c.hidden_size,
                                                                        options.intermediate_size, dtype));
}

namespace {

// [2, E]: the fraction of the (unmasked) tokens routed to each expert (counting each of a token's k choices), a
// constant, and the mean router probability of each expert, differentiable. Rows of seq_ids < 0 are padding.
Tensor router_statistics(const Tensor& probs, const Tensor& chosen, const Tensor& seq_ids, int64_t num_experts) {
  const int64_t tokens = probs.size(0), k = chosen.size(1);
  std::vector<double> keep(size_t(tokens), 1.0);
  if (seq_ids.defined() && seq_ids.numel() == tokens) {
    std::vector<double> ids = seq_ids.to_doubles();
    for (size_t t = 0; t < keep.size(); ++t) keep[t] = ids[t] >= 0 ? 1.0 : 0.0;
  }
  double kept = 0;
  for (double v : keep) kept += v;
  const double norm = kept > 0 ? 1.0 / kept : 0.0;
  std::vector<double> routed(size_t(num_experts), 0.0);
  std::vector<double> experts = chosen.to_doubles();
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < k; ++j) routed[size_t(experts[size_t(t * k + j)])] += keep[size_t(t)] * norm;
  Tensor mask = Tensor::from_values(keep, {tokens, 1}, DType::f32, probs.device());
  Tensor mean_prob = ops::scale(ops::sum(ops::mul(probs, mask), {0}), norm);
  Tensor fraction = Tensor::from_values(routed, {num_experts}, DType::f32, probs.device());
  return ops::concat({ops::reshape(fraction, {1, num_experts}), ops::reshape(mean_prob, {1, num_experts})}, 0);
}

}  // namespace

Tensor MoeBlock::forward(const Tensor& h, const LayerContext& ctx, std::vector<Tensor>& aux_losses) const {
  const int64_t hidden = h.size(-1), tokens = h.numel() / hidden, E = options_.num_experts;
  Tensor x = ops::reshape(h, {tokens, hidden});
  // transformers: the router's softmax and top-k in fp32, the chosen weights back in the activations' dtype.
  Tensor probs = ops::softmax(ops::to_dtype(gate->forward(x), DType::f32), -1);
  ops::TopK top = ops::topk(probs, options_.top_k);
  Tensor weights = top.values;
  if (options_.norm_topk_prob) weights = ops::div(weights, ops::sum(weights, {-1}, true));
  weights = ops::to_dtype(weights, h.dtype());

  ops::MoeRouting routing = ops::moe_routing(top.indices, E);
  Tensor rows = ops::moe_permute(x, routing);
  Tensor gate_up = ops::grouped_gemm(rows, experts->gate_up_proj, routing.counts);
  const int64_t I = options_.intermediate_size;
  std::vector<Tensor> parts = ops::split(gate_up, {I, I}, -1);
  Tensor act = ctx.kernels.fused ? ops::swiglu(parts[0], parts[1]) : ops::mul(ops::silu(parts[0]), parts[1]);
  Tensor out = ops::moe_unpermute(ops::grouped_gemm(act, experts->down_proj, routing.counts), weights, routing);

  if (options_.output_router_logits && !ctx.cache)
    aux_losses.push_back(router_statistics(probs, top.indices, ctx.seq_ids, E));
  return ops::reshape(out, h.shape());
}

AuxLossFinisher load_balancing_loss(const ModelConfig& config) {
  const double coef = json_get<double>(config.raw, "router_aux_loss_coef", 0.001, config.source);
  if (!std::isfinite(coef)) config_error(config.source, "router_aux_loss_coef", "must be a finite number");
  const int64_t E = config.num_experts;
  return [coef, E](std::vector<Tensor> statistics) -> std::vector<Tensor> {
    if (statistics.empty()) return {};
    // transformers sums the counts and probabilities over the layers before multiplying: the product of the
    // layer means, not the mean of the layers' products.
    const int64_t layers = int64_t(statistics.size());
    Tensor mean = ops::scale(ops::sum(ops::reshape(ops::concat(statistics, 0), {layers, 2, E}), {0}), 1.0 / layers);
    std::vector<Tensor> rows = ops::split(mean, {1, 1}, 0);
    return {ops::scale(ops::sum(ops::mul(rows[0], rows[1])), double(E) * coef)};
  };
}

}  // namespace automodel::models
