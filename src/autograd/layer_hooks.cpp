#include "autograd/layer_hooks.h"

#include "autograd/checkpoint.h"
#include "core/grad_node.h"
#include "ops/graph.h"

namespace automodel::autograd {

namespace {

// The identity, with a callback when its gradient passes: a hook node on a layer's output runs before the layer's
// backward (it was recorded after all of the layer's nodes), one on its input after it (recorded before them; the
// engine runs nodes latest first, and leaf accumulators as soon as they are ready).
struct LayerHookBackward : Node {
  std::function<void(int64_t)> hook;
  int64_t index = 0;
  std::string name() const override { return "LayerHookBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    hook(index);
    return {std::move(grads[0])};
  }
};

Tensor with_hook(const Tensor& t, const std::function<void(int64_t)>& hook, int64_t index) {
  auto node = std::make_shared<LayerHookBackward>();
  node->hook = hook;
  node->index = index;
  Tensor out = t.detach();
  ops::record(node, {t}, {out});
  return out;
}

}  // namespace

Tensor run_layer(const std::shared_ptr<const LayerHooks>& hooks, int64_t index, const Tensor& x,
                 const LayerForward& forward, bool checkpointed, std::vector<Tensor>& aux_losses) {
  if (hooks && hooks->before_forward) hooks->before_forward(index);
  const bool record = hooks && grad_enabled();
  Tensor in = record && hooks->after_backward ? with_hook(x, hooks->after_backward, index) : x;
  Tensor y;
  if (checkpointed) {
    std::vector<Tensor> outputs = checkpoint(
        [forward](const std::vector<Tensor>& v) {
          std::vector<Tensor> aux;
          std::vector<Tensor> result{forward(v[0], aux)};
          result.insert(result.end(), aux.begin(), aux.end());
          return result;
        },
        {in});
    y = outputs[0];
    aux_losses.insert(aux_losses.end(), outputs.begin() + 1, outputs.end());
  } else {
    y = forward(in, aux_losses);
  }
  if (record && hooks->before_backward && y.requires_grad()) y = with_hook(y, hooks->before_backward, index);
  if (hooks && hooks->after_forward) hooks->after_forward(index);
  return y;
}

}  // namespace automodel::autograd
