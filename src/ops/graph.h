#pragma once
// How an op joins the autograd graph: decide whether it must record (needs_grad), then connect
// its backward node to the inputs' producers and mark the outputs (record).
#include <memory>
#include <vector>

#include "core/grad_node.h"
#include "core/tensor.h"

namespace automodel::ops {

template <class... Ts>
bool needs_grad(const Ts&... inputs) {
  return grad_enabled() && (inputs.requires_grad() || ...);
}

// The edge a gradient for `t` flows along: its producer, or the accumulator of a leaf that
// requires grad; empty otherwise.
Edge gradient_edge(const Tensor& t);

// Sets node's edges to `inputs` (one per input, undefined tensors allowed) and makes `outputs`
// its results. Call only when needs_grad(...) is true.
void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs);

// Adds `g` into `t.grad()` (allocating it on first use): what leaf accumulators do.
void accumulate_grad(const Tensor& t, const Tensor& g);

// a + b for same-shaped tensors, without autograd: the engine's gradient sum.
Tensor add_same_shape(const Tensor& a, const Tensor& b);

}  // namespace automodel::ops
