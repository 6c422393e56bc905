#pragma once
// Per-layer hooks: callbacks around one layer's forward and backward, the points where a sharded data parallel
// gathers a layer's parameters (before its forward, and again before its backward) and reduces its gradients (once
// backward has produced all of them). The model runs each decoder layer through run_layer.
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace automodel::autograd {

struct LayerHooks {
  // Before layer `index` runs forward.
  std::function<void(int64_t index)> before_forward;
  // Once layer `index` has run forward (its recomputation in backward, when checkpointed, is not announced).
  std::function<void(int64_t index)> after_forward;
  // When the gradient of the layer's output reaches backward, before any of the layer's backward runs (and before a
  // checkpointed layer recomputes its forward).
  std::function<void(int64_t index)> before_backward;
  // Once backward has produced the gradients of the layer's input and of every parameter used only inside the layer:
  // they are final for this backward. The layer's input then gets a gradient even if it needs none (under a peft,
  // the first layer's: one more input-gradient pass through that layer).
  std::function<void(int64_t index)> after_backward;
};

// A layer's forward: its output, with any auxiliary losses (e.g. a router's) appended to `aux_losses`.
using LayerForward = std::function<Tensor(const Tensor& x, std::vector<Tensor>& aux_losses)>;

// forward(x) as layer `index`, with `hooks` (null: none) around it; `checkpointed`: as an activation-checkpointed
// region (checkpoint.h), recomputed in backward, its auxiliary losses extra outputs of the region so that backward
// reaches them. Backward hooks are recorded only while grad mode is on.
Tensor run_layer(const std::shared_ptr<const LayerHooks>& hooks, int64_t index, const Tensor& x,
                 const LayerForward& forward, bool checkpointed, std::vector<Tensor>& aux_losses);

}  // namespace automodel::autograd
