#pragma once
// The parameter types every backend's kernels take (kernels/backend.h): shapes, options and problem descriptions
// shared by kernels/cpu and kernels/cuda, so neither owns them. Pointers inside them point into the memory of the
// device the kernel runs on.
#include <cstddef>
#include <cstdint>

namespace automodel::kernels {

// Elementwise arithmetic (broadcasting through strides; see kernels/cpu/binary.h).
enum class BinaryOp : uint8_t { add, sub, mul, div };

// Scaled dot-product attention (layouts and masks: kernels/cpu/attention.h).
struct AttentionShape {
  int64_t batch = 0, q_len = 0, kv_len = 0, q_heads = 0, kv_heads = 0, head_dim = 0, v_head_dim = 0;
  double scale = 1;
  bool causal = true;
  int64_t window = 0;
  double softcap = 0;
  const int64_t* seq_ids = nullptr;  // [batch, kv_len] or null
  // [batch, kv_len] or null: under causality the query at position p sees keys up to horizons[p] (>= p; beyond p
  // inside a bidirectional block, e.g. one image's tokens). Non-decreasing along each row.
  const int64_t* horizons = nullptr;
  // [q_heads] or null: attention sinks (GPT-OSS), one learned logit per query head that joins every row's softmax
  // denominator and takes no value. In the statistics type (f32; f64 for f64). Backward writes their gradient to
  // dsinks (same type, overwritten) when it is not null.
  const void* sinks = nullptr;
  void* dsinks = nullptr;
};

// Rotary position embeddings on a contiguous [batch, seq, heads, head_dim] buffer (kernels/cpu/rope.h).
struct RopeParams {
  int64_t batch = 0, seq = 0, heads = 0, head_dim = 0;
  int64_t half_rot = 0;          // R / 2 = number of inv_freq entries; dims [R, head_dim) pass through
  int64_t pos_batch_stride = 0;  // position_ids[b * stride + t]: seq for [B, T], 0 for [T] / [1, T]
  bool interleaved = false;      // pairs (2i, 2i + 1) instead of (i, i + R/2)
  double attention_scaling = 1.0;
};

// A linear layer with a LoRA adapter (kernels/cpu/lora_linear.h).
struct LoraDims {
  int64_t rows = 0, in = 0, out = 0, rank = 0;
};

// Dropout on the adapter branch, with the dropout kernels' Philox mapping: "pre" drops elements of x ([rows, in])
// before A, "post" drops elements of the branch's output ([rows, out]) before it is added; p == 0 means none. The
// backward regenerates the same mask from (seed, first_block).
struct LoraDropout {
  double p = 0;
  bool post = false;
  uint64_t seed = 0, first_block = 0;
};

// The LM-head loss fused with its projection (kernels/cpu/linear_cross_entropy.h).
struct LinearCrossEntropyProblem {
  int64_t rows = 0, hidden = 0, vocab = 0;  // hidden [rows, hidden], weight [vocab, hidden], labels [rows]
  int64_t chunk = 1;                        // label rows per chunk (>= 1): the workspace is sized by it
  int64_t ignore_index = -100;
  double softcap = 0;               // > 0: logits = softcap * tanh((hidden @ weight^T) / softcap)
  double grad_scale = 1;            // dlogits = (softmax - onehot(label)) * grad_scale
  bool accumulate_dweight = false;  // add d(weight) to dweight's contents instead of overwriting them
};

// One Adam / AdamW step's scalars as the optimizer computes them in double (torch's single-tensor Adam); the kernel
// rounds each to its compute type (f32; f64 for f64 parameters).
struct AdamStep {
  bool decoupled = true;       // AdamW: p *= decay; Adam: g += weight_decay * p
  double decay = 1;            // 1 - lr * weight_decay
  double weight_decay = 0;     // L2 (coupled)
  double one_minus_beta1 = 0;  // the lerp weight of exp_avg
  double beta2 = 0, one_minus_beta2 = 0;
  double bc2_sqrt = 1;  // sqrt(1 - beta2^step)
  double eps = 0;
  double neg_step_size = 0;  // -(lr / (1 - beta1^step))
};

// One SGD step's scalars (torch.optim.SGD), rounded by the kernel as AdamStep's.
struct SgdStep {
  double weight_decay = 0, momentum = 0, one_minus_dampening = 1, neg_lr = 0;
  int kind =
      0;  // 0: no momentum; 1: momentum, first step (buf = d); 2: momentum (buf = momentum buf + (1 - dampening) d)
  bool nesterov = false;
};

// One torchao AdamW8bit step's scalars, in fp32 as torchao computes them.
struct Adam8Step {
  float lr_wd = 0;       // lr * weight_decay
  float step_size = 0;   // lr / bc1
  float w1 = 0, w2 = 0;  // 1 - beta1, 1 - beta2 (lerp weights)
  float bc2_sqrt = 1, bc2_sqrt_recip = 1, eps = 0;
};

}  // namespace automodel::kernels
