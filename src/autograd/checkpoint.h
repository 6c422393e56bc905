#pragma once
// Activation checkpointing: run a region without keeping its activations, and recompute it
// (with the same random numbers) when backward reaches it. Used per decoder layer.
#include <functional>
#include <vector>

#include "core/tensor.h"

namespace automodel::autograd {

using Region = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs)>;

// Outputs of region(inputs), recorded as one node. Parameters used inside the region receive
// their gradients when backward recomputes it; inputs that require grad get theirs as usual.
std::vector<Tensor> checkpoint(const Region& region, const std::vector<Tensor>& inputs);

}  // namespace automodel::autograd
