#pragma once
// The autograd graph's vocabulary, shared by ops/ (which records nodes as ops run) and autograd/
// (which walks them backwards): Node, Edge and the thread-local grad mode.
//
// How the autograd pieces fit together:
//   core/grad_node.h  (this file) what a graph is made of: a Node per recorded op (its backward in apply()),
//                     Edges to the producers of its inputs, the metadata of its outputs, and grad mode.
//   ops/graph.h       how an op joins the graph: needs_grad() decides, record() links the node to its inputs'
//                     producers (or to a leaf's AccumulateGrad) and marks the outputs; the engine's gradient sum
//                     (add_same_shape) and accumulate_grad. Each op's Node subclass sits beside its forward in
//                     ops/<op>.cpp and calls its backward kernel through the same backend table (ops/backend.h).
//   autograd/engine.h backward(): walks the nodes from the outputs, latest created first, summing the gradients
//                     that reach a node along several paths; a leaf's accumulation runs as soon as all its
//                     consumers have (its .grad is then final); then frees the saved tensors.
//   autograd/checkpoint.h  activation checkpointing: a region recorded as one node that reruns it in backward.
//   autograd/layer_hooks.h  callbacks around one layer's forward and backward (per-layer gather and reduce).
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace automodel {

struct Edge {
  std::shared_ptr<Node> fn;  // null: that input needs no gradient
  uint32_t input_nr = 0;     // which output of fn the gradient belongs to
};

// Shape, dtype and device of one output, so the engine can pass zeros for outputs that got no gradient.
struct OutputMeta {
  Shape shape;
  DType dtype = DType::f32;
  Device device;
};

struct Node {
  Node();
  virtual ~Node() = default;
  virtual std::string name() const = 0;
  // One gradient per output in, one per next_edges entry out (undefined: no gradient).
  virtual std::vector<Tensor> apply(std::vector<Tensor>&& grad_outputs) = 0;
  // Drop saved tensors once backward has run (unless the graph is retained).
  virtual void release_saved() {}
  // True for nodes that keep working after a backward freed the graph (leaf accumulators).
  virtual bool reusable() const { return false; }

  std::vector<Edge> next_edges;
  std::vector<OutputMeta> outputs;
  uint64_t sequence_nr;   // creation order: later nodes run first in backward
  bool released = false;  // saved tensors already freed by a backward without retain_graph
};

bool grad_enabled();
void set_grad_enabled(bool enabled);

// Disables graph recording in this thread for its lifetime.
class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

class EnableGradGuard {
 public:
  EnableGradGuard() : prev_(grad_enabled()) { set_grad_enabled(true); }
  ~EnableGradGuard() { set_grad_enabled(prev_); }
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace automodel
