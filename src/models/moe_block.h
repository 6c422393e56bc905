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
};

// MoeOptions from the config's num_local_experts, num_experts_per_tok, moe_intermediate_size, output_router_logits;
// norm_topk_prob as given (the family decides).
MoeOptions moe_options(const ModelConfig& config, bool norm_topk_prob);

// The experts' weights, grouped: one tensor per projection for all experts (transformers 5's in-memory layout).
class GroupedExperts : public nn::Module {
 public:
  GroupedExperts(int64_t num_experts, int64_t hidden, int64_t intermediate, DType dtype);
  Tensor gate_up_proj;  // [E, 2I, H]: gate rows, then up rows
  Tensor down_proj;     // [E, H, I]
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

}  // namespace automodel::models
