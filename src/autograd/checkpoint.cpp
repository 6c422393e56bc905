#include "autograd/checkpoint.h"

#include "autograd/engine.h"
#include "core/grad_node.h"
#include "core/rng.h"
#include "ops/graph.h"

namespace automodel::autograd {

namespace {
struct CheckpointBackward : Node {
  Region region;
  std::vector<Tensor> inputs;  // detached; only data is kept
  std::vector<bool> input_requires_grad;
  GeneratorState rng_state;
  std::string name() const override { return "CheckpointBackward"; }

  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    // Replay the region with the random stream it saw in forward, then put the stream back.
    Generator& gen = default_generator();
    GeneratorState now = gen.state();
    gen.set_state(rng_state);
    std::vector<Tensor> leaves;
    for (size_t i = 0; i < inputs.size(); ++i) {
      Tensor leaf = inputs[i].defined() ? inputs[i].detach() : Tensor();
      if (input_requires_grad[i]) leaf.set_requires_grad(true);
      leaves.push_back(leaf);
    }
    std::vector<Tensor> outputs;
    {
      EnableGradGuard enable;
      outputs = region(leaves);
    }
    gen.set_state(now);
    std::vector<Tensor> diff_outputs, diff_grads;
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (outputs[i].requires_grad()) {
        diff_outputs.push_back(outputs[i]);
        diff_grads.push_back(grads[i]);
      }
    }
    if (!diff_outputs.empty()) backward(diff_outputs, diff_grads);
    std::vector<Tensor> result;
    for (size_t i = 0; i < leaves.size(); ++i) result.push_back(input_requires_grad[i] ? leaves[i].grad() : Tensor());
    return result;
  }
  void release_saved() override {
    inputs.clear();
    region = nullptr;
  }
};
}  // namespace

std::vector<Tensor> checkpoint(const Region& region, const std::vector<Tensor>& inputs) {
  GeneratorState rng_state = default_generator().state();
  std::vector<Tensor> outputs;
  {
    NoGradGuard no_grad;
    outputs = region(inputs);
  }
  if (!grad_enabled()) return outputs;
  // Recorded even when no input requires grad: parameters inside the region may.
  auto node = std::make_shared<CheckpointBackward>();
  node->region = region;
  for (const Tensor& t : inputs) {
    node->inputs.push_back(t.defined() ? t.detach() : Tensor());
    node->input_requires_grad.push_back(t.requires_grad());
  }
  node->rng_state = rng_state;
  std::vector<Tensor> recorded;
  for (const Tensor& out : outputs) {
    AM_CHECK(out.is_leaf(), "checkpoint: region output already has a graph");
    recorded.push_back(out);
  }
  ops::record(node, inputs, recorded);
  return outputs;
}

}  // namespace automodel::autograd
