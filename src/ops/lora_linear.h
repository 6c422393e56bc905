#pragma once
// LoRA linear as one differentiable op: y = x W^T + bias + scale * dropout(x) A^T B^T, one autograd
// node, the adapter branch accumulated into y by the GEMM itself, ΔW = B A never formed.
#include "core/rng.h"
#include "core/tensor.h"

namespace automodel::ops {

enum class LoraDropoutPosition {
  pre,   // dropout on the branch's input x (peft's lora_dropout)
  post,  // dropout on the branch's scaled output (NeMo Automodel's default)
};

struct LoraOptions {
  double scale = 1.0;  // alpha / rank (alpha / sqrt(rank) for rsLoRA)
  double dropout = 0.0;
  LoraDropoutPosition dropout_position = LoraDropoutPosition::pre;
  bool training = true;            // dropout only while training
  Generator* generator = nullptr;  // the dropout's stream; default_generator() when null
};

// x [..., in], weight [out, in], bias [out] or undefined, lora_a [rank, in], lora_b [out, rank]
// -> [..., out] in x's dtype. Either every tensor has one dtype (f32, f64, bf16), or the base
// (weight, bias) is bf16 under f32 x / lora_a / lora_b: a frozen bf16 base, whose GEMM rounds x to
// bf16 and accumulates in fp32 (weight and bias must not require grad then). Gradients flow to x,
// lora_a, lora_b, and to weight / bias when they require grad. With dropout, the mask comes from
// the generator's Philox stream and the backward regenerates it (checkpoint recompute is exact).
Tensor lora_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& lora_a,
                   const Tensor& lora_b, const LoraOptions& options = {});

}  // namespace automodel::ops
