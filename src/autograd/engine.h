#pragma once
// Reverse-mode differentiation over the graph the ops recorded.
#include <vector>

#include "core/tensor.h"

namespace automodel::autograd {

// Backpropagates from `outputs` with `grad_outputs` (undefined: ones, allowed only for one-element
// outputs), accumulating into the .grad of every leaf that requires grad. Nodes run latest created
// first; a leaf's accumulation as soon as all its consumers have run (its .grad is then final). The
// graph's saved tensors are freed afterwards unless retain_graph.
void backward(const std::vector<Tensor>& outputs, const std::vector<Tensor>& grad_outputs = {},
              bool retain_graph = false);
inline void backward(const Tensor& loss, bool retain_graph = false) { backward({loss}, {}, retain_graph); }

}  // namespace automodel::autograd
