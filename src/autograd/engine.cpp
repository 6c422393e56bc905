#include "autograd/engine.h"

#include <queue>
#include <unordered_map>

#include "core/grad_node.h"
#include "ops/graph.h"

namespace automodel::autograd {

namespace {
// The order nodes run in: latest created first (so a node runs after every node that consumed its outputs), but
// leaf accumulators (reusable, made once with an early number) as soon as they are ready, as torch does: a leaf's
// gradient is then final right after its last consumer ran (layer_hooks.h relies on it), and the buffered gradient
// is freed at once. Accumulators feed no other node, so the others keep their order and their sums their bits.
struct LaterFirst {
  bool operator()(const Node* a, const Node* b) const {
    const bool a_leaf = a->reusable(), b_leaf = b->reusable();
    if (a_leaf != b_leaf) return b_leaf;
    return a->sequence_nr < b->sequence_nr;
  }
};

// Gradient for `root` given by the caller: ones for a one-element output.
Tensor seed_gradient(const Tensor& output, const Tensor& given) {
  if (given.defined()) {
    AM_CHECK(given.shape() == output.shape(), "backward: gradient of shape ", shape_str(given.shape()),
             " for an output of shape ", shape_str(output.shape()));
    return given;
  }
  AM_CHECK(output.numel() == 1, "backward: output of shape ", shape_str(output.shape()),
           " is not a scalar; pass its gradient explicitly");
  return Tensor::ones(output.shape(), output.dtype(), output.device());
}
}  // namespace

void backward(const std::vector<Tensor>& outputs, const std::vector<Tensor>& grad_outputs, bool retain_graph) {
  AM_CHECK(grad_outputs.empty() || grad_outputs.size() == outputs.size(), "backward: ", grad_outputs.size(),
           " gradients for ", outputs.size(), " outputs");
  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  std::unordered_map<Node*, int> pending;  // unprocessed consumers of each node's outputs
  std::unordered_map<Node*, std::shared_ptr<Node>> keep_alive;

  auto add_to_buffer = [&](const Edge& e, Tensor g) {
    auto& buf = buffers[e.fn.get()];
    if (buf.empty()) buf.resize(e.fn->outputs.size());
    Tensor& slot = buf[e.input_nr];
    slot = slot.defined() ? ops::add_same_shape(slot, g) : std::move(g);
  };

  std::vector<Edge> roots;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& out = outputs[i];
    AM_CHECK(out.requires_grad(), "backward: output ", i, " (", out.describe(),
             ") does not require grad — nothing that produced it needs a gradient");
    Edge e = ops::gradient_edge(out);
    add_to_buffer(e, seed_gradient(out, grad_outputs.empty() ? Tensor() : grad_outputs[i]));
    roots.push_back(e);
  }

  // Count how many edges lead into each node reachable from the roots.
  std::vector<Node*> stack;
  for (const Edge& e : roots) {
    if (!keep_alive.count(e.fn.get())) {
      keep_alive[e.fn.get()] = e.fn;
      stack.push_back(e.fn.get());
    }
  }
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next_edges) {
      if (!e.fn) continue;
      pending[e.fn.get()]++;
      if (!keep_alive.count(e.fn.get())) {
        keep_alive[e.fn.get()] = e.fn;
        stack.push_back(e.fn.get());
      }
    }
  }

  std::priority_queue<Node*, std::vector<Node*>, LaterFirst> ready;
  for (const Edge& e : roots)
    if (pending[e.fn.get()] == 0) ready.push(e.fn.get());
  std::unordered_map<Node*, bool> queued;
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    if (queued[n]) continue;
    queued[n] = true;
    std::vector<Tensor> grads = std::move(buffers[n]);
    buffers.erase(n);
    grads.resize(n->outputs.size());
    bool any = false;
    for (const Tensor& g : grads) any = any || g.defined();
    std::vector<Tensor> input_grads;
    if (any) {  // a node that received no gradient at all contributes none
      AM_CHECK(!n->released, "backward through ", n->name(),
               " a second time: its saved tensors were freed by the first backward; pass retain_graph=true to "
               "the first one");
      for (size_t i = 0; i < grads.size(); ++i)
        if (!grads[i].defined())
          grads[i] = Tensor::zeros(n->outputs[i].shape, n->outputs[i].dtype, n->outputs[i].device);
      input_grads = n->apply(std::move(grads));
    }
    if (!retain_graph) {
      n->release_saved();
      n->released = !n->reusable();
    }
    AM_CHECK(input_grads.empty() || input_grads.size() == n->next_edges.size(), n->name(), " returned ",
             input_grads.size(), " gradients for ", n->next_edges.size(), " inputs");
    for (size_t i = 0; i < input_grads.size(); ++i) {
      const Edge& e = n->next_edges[i];
      if (!e.fn) continue;
      if (input_grads[i].defined()) add_to_buffer(e, std::move(input_grads[i]));
      if (--pending[e.fn.get()] == 0) ready.push(e.fn.get());
    }
    if (input_grads.empty())
      for (const Edge& e : n->next_edges)
        if (e.fn && --pending[e.fn.get()] == 0) ready.push(e.fn.get());
  }
}

}  // namespace automodel::autograd
