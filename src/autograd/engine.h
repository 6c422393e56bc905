#pragma once
// Reverse-mode differentiation over the graph the ops recorded.
//
// Where the pieces are (core/grad_node.h has the longer map):
//   a Node (one per recorded op: its backward in apply(), Edges to its inputs' producers) and grad mode live in
//     core/grad_node.h; each op's Node subclass sits beside its forward in ops/<op>.cpp;
//   the graph is built as the ops run: ops/graph.cpp's record() links a new node to its inputs' producers (a leaf's
//     AccumulateGrad) and sets it as its outputs' grad_fn, when needs_grad() says so;
//   backward (here, engine.cpp) runs it: from the outputs, latest node first (sequence_nr), summing the gradients
//     that reach a node along several paths, into the leaves' .grad; autograd/checkpoint.h recomputes a region.
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
