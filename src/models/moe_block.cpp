#include "models/moe_block.h"

#include <cmath>

#include "core/rng.h"
#include "nn/init.h"
#include "ops/activation.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "ops/concat.h"
#include "ops/grouped_gemm.h"
#include "ops/matmul.h"
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

GroupedExperts::GroupedExperts(int64_t num_experts, int64_t hidden, int64_t intermediate, DType dtype, bool transposed)
    : transposed_(transposed) {
  // As nn.Linear initialises each expert's projections (a model from config is re-initialised by from_config).
  auto make = [&](const Shape& shape, int64_t fan_in) {
    const double bound = 1.0 / std::sqrt(double(fan_in));
    Tensor t = nn::init_enabled() ? rand_uniform(shape, -bound, bound, default_generator(), dtype)
                                  : Tensor::empty(shape, dtype);
    t.set_requires_grad(true);
    return t;
  };
  gate_up_proj = transposed ? make({num_experts, hidden, 2 * intermediate}, hidden)
                            : make({num_experts, 2 * intermediate, hidden}, hidden);
  down_proj = transposed ? make({num_experts, intermediate, hidden}, intermediate)
                         : make({num_experts, hidden, intermediate}, intermediate);
  register_parameter("gate_up_proj", &gate_up_proj);
  register_parameter("down_proj", &down_proj);
}

ExpertLoraPair::ExpertLoraPair() {
  lora_A = register_module("lora_A", std::make_shared<nn::LoraWeight>());
  lora_B = register_module("lora_B", std::make_shared<nn::LoraWeight>());
}

const ExpertLoraPair* GroupedExperts::pair(ExpertProjection p) const {
  const Slot slot = p == ExpertProjection::gate_up ? gate_up_slot_ : down_slot_;
  return slot == Slot::none ? nullptr : slot == Slot::inner ? inner_.get() : outer_view_.get();
}

void GroupedExperts::attach_lora(const Tensor& gate_up_a, const Tensor& gate_up_b, double gate_up_scale,
                                 const Tensor& down_a, const Tensor& down_b, double down_scale) {
  detach_lora();
  const bool up = gate_up_a.defined(), down = down_a.defined();
  if (!up && !down) return;
  const int64_t E = num_experts();
  auto check = [&](ExpertProjection p, const Tensor& a, const Tensor& b) {
    const Tensor& w = weight(p);
    AM_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(0) % E == 0 && a.size(0) > 0 && a.size(1) == in_features(p) &&
                 b.size(0) == out_features(p) && b.size(1) == a.size(0),
             "expert LoRA for ", p == ExpertProjection::gate_up ? "gate_up_proj" : "down_proj", " ", w.describe(),
             ": lora_A ", a.describe(), " and lora_B ", b.describe(), " are not [E * r, in] and [out, r * E]");
  };
  if (up) check(ExpertProjection::gate_up, gate_up_a, gate_up_b);
  if (down) check(ExpertProjection::down, down_a, down_b);
  if (!outer_a_) {
    outer_a_ = register_module("lora_A", std::make_shared<nn::LoraWeight>());
    outer_b_ = register_module("lora_B", std::make_shared<nn::LoraWeight>());
    outer_view_ = std::make_shared<ExpertLoraPair>();
    outer_view_->lora_A = outer_a_;
    outer_view_->lora_B = outer_b_;
  }
  auto place = [](const std::shared_ptr<nn::LoraWeight>& slot, const Tensor& t) {
    slot->weight = t;
    slot->weight.set_requires_grad(true);
  };
  // peft wraps the grouped tensors in registration order (gate_up_proj, then down_proj): the last one adapted is
  // the outer wrapper.
  if (up && down) {
    if (!inner_) inner_ = register_module("base_layer", std::make_shared<ExpertLoraPair>());
    place(inner_->lora_A, gate_up_a), place(inner_->lora_B, gate_up_b);
    place(outer_a_, down_a), place(outer_b_, down_b);
    gate_up_slot_ = Slot::inner, down_slot_ = Slot::outer;
  } else {
    place(outer_a_, up ? gate_up_a : down_a), place(outer_b_, up ? gate_up_b : down_b);
    (up ? gate_up_slot_ : down_slot_) = Slot::outer;
  }
  gate_up_scale_ = gate_up_scale, down_scale_ = down_scale;
}

void GroupedExperts::detach_lora() {
  for (const auto& slot : {outer_a_, outer_b_})
    if (slot) slot->weight = Tensor();
  if (inner_) inner_->lora_A->weight = Tensor(), inner_->lora_B->weight = Tensor();
  gate_up_slot_ = down_slot_ = Slot::none;
}

namespace {

// peft's factors of expert e: A_e [E, r, in] (rows e * r ...), B_e [E, out, r] (columns e, E + e, ...).
std::pair<Tensor, Tensor> expert_factors(const Tensor& a, const Tensor& b, int64_t E) {
  const int64_t r = a.size(0) / E, out = b.size(0);
  Tensor a3 = ops::reshape(a, {E, r, a.size(1)});
  Tensor b3 = ops::transpose(ops::transpose(ops::reshape(b, {out, r, E}), 0, 2), 1, 2);
  return {a3, b3};
}

}  // namespace

Tensor GroupedExperts::project(ExpertProjection p, const Tensor& rows, const Tensor& counts) const {
  Tensor y = ops::grouped_gemm(rows, weight(p), counts, transposed_);
  if (!has_lora(p)) return y;
  auto [a3, b3] = expert_factors(lora_A(p), lora_B(p), num_experts());
  // The adapter's products in its own dtype (fp32 adapters over a bf16 model, as peft keeps them), back to y's.
  const DType dt = a3.dtype();
  Tensor u = ops::grouped_gemm(ops::to_dtype(rows, dt), a3, counts);
  Tensor branch = ops::grouped_gemm(u, ops::contiguous(b3), counts);
  return y + ops::to_dtype(ops::scale(branch, lora_scale(p)), y.dtype());
}

Tensor GroupedExperts::lora_delta(ExpertProjection p) const {
  AM_CHECK(has_lora(p), "lora_delta: no adapter on this projection");
  const DType acc = weight(p).dtype() == DType::f64 ? DType::f64 : DType::f32;
  auto [a3, b3] = expert_factors(ops::to_dtype(lora_A(p), acc), ops::to_dtype(lora_B(p), acc), num_experts());
  Tensor delta = ops::scale(ops::matmul(ops::contiguous(b3), a3), lora_scale(p));
  return transposed_ ? ops::contiguous(ops::transpose(delta, 1, 2)) : delta;
}

MoeBlock::MoeBlock(const ModelConfig& c, const MoeOptions& options, DType dtype) : options_(options) {
  AM_CHECK(options.num_experts > 0 && options.top_k > 0 && options.top_k <= options.num_experts,
           "a MoE block needs 1 <= top_k <= num_experts, got top_k ", options.top_k, " of ", options.num_experts);
  gate = register_module("gate", std::make_shared<nn::Linear>(c.hidden_size, options.num_experts, false, dtype));
  experts = register_module("experts", std::make_shared<GroupedExperts>(options.num_experts, c.hidden_size,
                                                                        options.intermediate_size, dtype));
}

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

Tensor MoeBlock::forward(const Tensor& h, const LayerContext& ctx, std::vector<Tensor>& aux_losses) const {
  const int64_t hidden = h.size(-1), tokens = h.numel() / hidden, E = options_.num_experts;
  Tensor x = ops::reshape(h, {tokens, hidden});
  if (ctx.training && options_.jitter_noise > 0)
    x = ops::mul(x, rand_uniform(x.shape(), 1.0 - options_.jitter_noise, 1.0 + options_.jitter_noise,
                                 default_generator(), x.dtype()));
  // transformers: the router's softmax and top-k in fp32, the chosen weights back in the activations' dtype.
  Tensor probs = ops::softmax(ops::to_dtype(gate->forward(x), DType::f32), -1);
  ops::TopK top = ops::topk(probs, options_.top_k);
  Tensor weights = top.values;
  if (options_.norm_topk_prob) weights = ops::div(weights, ops::sum(weights, {-1}, true));
  weights = ops::to_dtype(weights, h.dtype());

  ops::MoeRouting routing = ops::moe_routing(top.indices, E);
  Tensor rows = ops::moe_permute(x, routing);
  Tensor gate_up = experts->project(ExpertProjection::gate_up, rows, routing.counts);
  const int64_t I = options_.intermediate_size;
  std::vector<Tensor> parts = ops::split(gate_up, {I, I}, -1);
  Tensor act = ctx.kernels.fused ? ops::swiglu(parts[0], parts[1]) : ops::mul(ops::silu(parts[0]), parts[1]);
  Tensor out = ops::moe_unpermute(experts->project(ExpertProjection::down, act, routing.counts), weights, routing);

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
