#pragma once
// nn.Linear: y = x W^T + b with W [out, in], and an optional LoRA adapter (lora_A / lora_B) that
// turns the forward into ops::lora_linear.
#include <memory>

#include "core/rng.h"
#include "nn/module.h"
#include "ops/lora_linear.h"

namespace automodel::nn {

// One adapter matrix as a sub-module, so its parameter is named `<linear>.lora_A.weight`.
class LoraWeight : public Module {
 public:
  LoraWeight() { register_parameter("weight", &weight); }
  Tensor weight;  // undefined while detached (then it lists no parameter)
};

// How an attached adapter runs (ops::LoraOptions less the generator, which is settable apart).
struct LoraSettings {
  double scale = 1.0;
  double dropout = 0.0;
  ops::LoraDropoutPosition dropout_position = ops::LoraDropoutPosition::post;
  bool training = true;            // dropout only while training
  Generator* generator = nullptr;  // default_generator() when null
};

class Linear : public Module {
 public:
  // Initialised as torch does: W and b uniform in +-1/sqrt(in_features), from the default generator.
  Linear(int64_t in_features, int64_t out_features, bool bias = true, DType dtype = DType::f32);
  Tensor forward(const Tensor& x) const;

  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return weight.size(0); }

  // Attaches lora_A [rank, in] and lora_B [out, rank] (they become parameters requiring grad,
  // registered as lora_A.weight / lora_B.weight); replaces an adapter already attached. Their dtype
  // may differ from the weight's: the forward computes the adapter branch in the adapters' dtype
  // (a bf16 weight under f32 adapters stays bf16, see ops::lora_linear) and returns x's dtype.
  void attach_lora(const Tensor& lora_a, const Tensor& lora_b, const LoraSettings& settings);
  // Removes the adapter (its parameters disappear from named_parameters).
  void detach_lora();
  bool has_lora() const { return lora_a_ && lora_a_->weight.defined(); }
  Tensor lora_A() const { return has_lora() ? lora_a_->weight : Tensor(); }
  Tensor lora_B() const { return has_lora() ? lora_b_->weight : Tensor(); }
  LoraSettings& lora_settings() { return lora_; }
  const LoraSettings& lora_settings() const { return lora_; }

  Tensor weight;
  Tensor bias;  // undefined without bias
  // With an adapter: one ops::lora_linear node (fused), or peft's composition of separate ops:
  // linear(x, W, b) + scale * linear(linear(dropout(x), A), B).
  bool fused = true;

 private:
  std::shared_ptr<LoraWeight> lora_a_, lora_b_;  // registered on first attach, kept (empty) after detach
  LoraSettings lora_;
};

}  // namespace automodel::nn
