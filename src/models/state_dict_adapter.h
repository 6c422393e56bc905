#pragma once
// How a family's parameters are laid out in a Hugging Face checkpoint. Loading (from_pretrained, resuming from a
// consolidated checkpoint) and saving (save_pretrained, consolidated checkpoints) all pass through the model's
// adapter, so a family whose tensors differ from transformers' (grouped MoE experts, a vision tower's prefix)
// converts in one place. The base class is the identity every dense family uses.
#include <string>
#include <vector>

#include "core/tensor.h"

namespace automodel::models {

// One tensor as the checkpoint stores it.
struct HfTensorSpec {
  std::string name;
  Shape shape;
  // Read as stored (integers allowed) rather than as a weight of the parameter's dtype: quantized data the adapter's
  // from_hf decodes (GPT-OSS's MXFP4 blocks and scales).
  bool raw = false;
};

class StateDictAdapter {
 public:
  virtual ~StateDictAdapter() = default;
  // The checkpoint tensors that hold our parameter `name` of shape `shape`, in the order from_hf takes them.
  virtual std::vector<HfTensorSpec> hf_layout(const std::string& name, const Shape& shape) const {
    return {{name, shape}};
  }
  // The layouts a checkpoint may hold `name` in, hf_layout's first (a family whose checkpoints come in several
  // layouts, such as per-expert or grouped MoE experts, lists each); loading reads the first that is all present.
  virtual std::vector<std::vector<HfTensorSpec>> hf_read_layouts(const std::string& name, const Shape& shape) const {
    return {hf_layout(name, shape)};
  }
  // Our parameter `name` from its checkpoint tensors (as read, in the order of the layout they were read by).
  virtual Tensor from_hf(const std::string& name, std::vector<Tensor> parts) const;
  // The checkpoint tensors for our parameter `name` holding `value`, in hf_layout's order.
  virtual std::vector<Tensor> to_hf(const std::string& name, const Tensor& value) const { return {value}; }
};

}  // namespace automodel::models
