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

}  // namespace automodel::kernels
