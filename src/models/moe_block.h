#pragma once
// The sparse mixture-of-experts feed-forward block (transformers' Qwen3MoeSparseMoeBlock, MixtralSparseMoeBlock):
// a router (`gate`, a linear layer to one logit per expert), softmax, the top-k experts of each token, and the
// experts as grouped tensors (`experts.gate_up_proj` [E, 2I, H], `experts.down_proj` [E, H, I], SwiGLU), run through
// one grouped GEMM each. Capacity-free: no token is dropped. The load-balancing loss (transformers'
// load_balancing_loss_func) spans all MoE layers, so each block appends its router statistics to aux_losses and the
// family's Architecture::finish_aux_losses turns them into the one loss.
#include <memory>
#include <vector>

#include "models/causal_lm.h"
#include "models/decoder_layer.h"

namespace automodel::models {

struct MoeOptions {
  int64_t num_experts = 0, top_k = 0, intermediate_size = 0;
  bool norm_topk_prob = false;        // renormalise the chosen probabilities to sum to 1 (Mixtral always does)
  bool output_router_logits = false;  // append router statistics for the load-balancing loss
  // Mixtral's router_jitter_noise: in a training step the block's input is scaled by noise uniform in [1 - j, 1 + j]
  // (one draw per element, from the default generator) before the router and the experts see it.
  double jitter_noise = 0.0;
};

// MoeOptions from the config's num_local_experts, num_experts_per_tok, moe_intermediate_size, output_router_logits;
// norm_topk_prob as given (the family decides).
MoeOptions moe_options(const ModelConfig& config, bool norm_topk_prob);

enum class ExpertProjection { gate_up, down };

// lora_A / lora_B of one LoRA'd grouped tensor (peft's ParamWrapper holds its two matrices the same way).
class ExpertLoraPair : public nn::Module {
 public:
  ExpertLoraPair();
  std::shared_ptr<nn::LoraWeight> lora_A, lora_B;
};

// The experts' weights, grouped: one tensor per projection for all experts (transformers 5's in-memory layout), with
// optional LoRA per projection in peft 0.21's layout for grouped tensors (target_parameters): lora_A [E * r, in]
// holds expert e's rows e * r .. e * r + r - 1, lora_B [out, r * E] its columns e, E + e, ..., and expert e's weight
// becomes W_e + scale * B_e A_e. Names follow peft's nesting of its wrappers: one adapted tensor has its adapter at
// `lora_A.weight` / `lora_B.weight`; with both, gate_up_proj's is at `base_layer.lora_A.weight` / ... and
// down_proj's at `lora_A.weight` / ....
class GroupedExperts : public nn::Module {
 public:
  // transposed: each expert's matrices are [in, out] (GPT-OSS: gate_up_proj [E, H, 2I], down_proj [E, I, H]), as
  // transformers marks with is_transposed; peft's adapters have the same [E * r, in] / [out, r * E] shapes either way.
  GroupedExperts(int64_t num_experts, int64_t hidden, int64_t intermediate, DType dtype, bool transposed = false);
  Tensor gate_up_proj;  // [E, 2I, H]: gate rows, then up rows (transposed: [E, H, 2I])
  Tensor down_proj;     // [E, H, I] (transposed: [E, I, H])

  int64_t num_experts() const { return gate_up_proj.size(0); }
  bool transposed() const { return transposed_; }
  int64_t in_features(ExpertProjection p) const { return weight(p).size(transposed_ ? 1 : 2); }
  int64_t out_features(ExpertProjection p) const { return weight(p).size(transposed_ ? 2 : 1); }
  Tensor& weight(ExpertProjection p) { return p == ExpertProjection::gate_up ? gate_up_proj : down_proj; }
  const Tensor& weight(ExpertProjection p) const { return p == ExpertProjection::gate_up ? gate_up_proj : down_proj; }

  // Attaches adapters (lora_A [E * r, in], lora_B [out, r * E]; an undefined lora_A: none) to both projections at
  // once, as peft's nesting names them; they become parameters requiring grad. Replaces adapters attached before.
  void attach_lora(const Tensor& gate_up_a, const Tensor& gate_up_b, double gate_up_scale, const Tensor& down_a,
                   const Tensor& down_b, double down_scale);
  void detach_lora();
  bool has_lora(ExpertProjection p) const { return pair(p) != nullptr; }
  Tensor lora_A(ExpertProjection p) const { return pair(p) ? pair(p)->lora_A->weight : Tensor(); }
  Tensor lora_B(ExpertProjection p) const { return pair(p) ? pair(p)->lora_B->weight : Tensor(); }
  double lora_scale(ExpertProjection p) const { return p == ExpertProjection::gate_up ? gate_up_scale_ : down_scale_; }
  // The projection's rows (grouped by expert, counts [E]) times its weight, plus its adapter's product when it has
  // one.
  Tensor project(ExpertProjection p, const Tensor& rows, const Tensor& counts) const;
  // scale * B_e A_e for every expert in the weight's layout ([E, out, in]; transposed: [E, in, out]), in fp32 (f64
  // for f64): what merging adds to the weight.
  Tensor lora_delta(ExpertProjection p) const;

 private:
  bool transposed_;
  const ExpertLoraPair* pair(ExpertProjection p) const;
  std::shared_ptr<nn::LoraWeight> outer_a_, outer_b_;  // this module's lora_A / lora_B (registered on first use)
  std::shared_ptr<ExpertLoraPair> inner_;              // base_layer (registered on first use)
  std::shared_ptr<ExpertLoraPair> outer_view_;         // outer_a_ / outer_b_ as a pair (not registered)
  enum class Slot { none, outer, inner } gate_up_slot_ = Slot::none, down_slot_ = Slot::none;
  double gate_up_scale_ = 1, down_scale_ = 1;
};

class MoeBlock : public FeedForward {
 public:
  MoeBlock(const ModelConfig& c, const MoeOptions& options, DType dtype);
  Tensor forward(const Tensor& h, const LayerContext& ctx, std::vector<Tensor>& aux_losses) const override;

  std::shared_ptr<nn::Linear> gate;  // the router, [E, H]
  std::shared_ptr<GroupedExperts> experts;

 private:
  MoeOptions options_;
};

// Architecture::finish_aux_losses for the MoE families: the router statistics the blocks appended (one [2, E]
// tensor per MoE layer) into transformers' load-balancing loss times router_aux_loss_coef; nothing when no block
// appended any.
AuxLossFinisher load_balancing_loss(const ModelConfig& config);

// One MoE layer's router statistics for load_balancing_loss, [2, E]: the fraction of the (unmasked) tokens routed to
// each expert (counting each of a token's k choices), a constant, and the mean router probability of each expert,
// differentiable. probs [tokens, E] (softmax over all experts), chosen [tokens, k]; rows of seq_ids < 0 are padding.
Tensor router_statistics(const Tensor& probs, const Tensor& chosen, const Tensor& seq_ids, int64_t num_experts);

}  // namespace automodel::models
