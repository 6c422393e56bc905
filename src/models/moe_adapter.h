#pragma once
// The checkpoint layout of grouped MoE experts. transformers 5 holds each MoE layer's experts as two grouped tensors
// (mlp.experts.gate_up_proj [E, 2I, H], mlp.experts.down_proj [E, H, I]), as we do, but its save_pretrained writes
// them back per expert, as the families' original checkpoints hold them: Qwen3-MoE `mlp.experts.N.{gate,up,down}_proj
// .weight`, Mixtral `block_sparse_moe.experts.N.{w1,w3,w2}.weight` (and `block_sparse_moe.gate.weight`). This adapter
// writes that per-expert layout and reads either.
#include <string>

#include "models/state_dict_adapter.h"

namespace automodel::models {

struct PerExpertNames {
  std::string block = "mlp";  // the MoE block's name in the checkpoint (Mixtral: block_sparse_moe)
  std::string gate = "gate_proj", up = "up_proj", down = "down_proj";  // Mixtral: w1, w3, w2
};

class MoeStateDictAdapter : public StateDictAdapter {
 public:
  explicit MoeStateDictAdapter(PerExpertNames names) : names_(std::move(names)) {}
  std::vector<HfTensorSpec> hf_layout(const std::string& name, const Shape& shape) const override;
  std::vector<std::vector<HfTensorSpec>> hf_read_layouts(const std::string& name, const Shape& shape) const override;
  Tensor from_hf(const std::string& name, std::vector<Tensor> parts) const override;
  std::vector<Tensor> to_hf(const std::string& name, const Tensor& value) const override;

 private:
  PerExpertNames names_;
};

}  // namespace automodel::models
