#pragma once
// Scaled dot-product attention, tiled with an online softmax so the [T, T] score matrix never
// exists whole (flash-attention style), forward and backward.
#include "core/tensor.h"

namespace automodel::ops {

struct AttentionOptions {
  double scale = 0;    // 0: 1/sqrt(head_dim)
  bool causal = true;  // query i sees keys at positions <= its own
  int64_t window = 0;  // > 0: query at position p sees keys at p - window < position <= p
  double softcap = 0;  // > 0: scores become softcap * tanh(scores / softcap) before masking
  Tensor seq_ids;      // optional i32/i64 [B, Tk]: tokens attend only within equal ids (packing)
  // Optional i32/i64 [B, Tk]: ids >= 0 mark blocks of positions (Gemma 3's image tokens) whose queries also see
  // the later keys of their own block, on top of causality (-1: none). The window and seq_ids still apply. Each
  // block must be one contiguous run of positions.
  Tensor bidirectional_blocks;
  // Optional floating [Hq]: attention sinks (GPT-OSS), one learned logit per query head that joins each row's
  // softmax denominator and takes no value. Differentiable.
  Tensor sinks;
};

// q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv] with Hq a multiple of Hkv (grouped-query
// heads share K/V without copies) -> [B, Tq, Hq, Dv]. When Tq < Tk the queries are the last Tq
// positions (decoding with a KV cache); query ids for seq_ids are the last Tq entries.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& options = {});

}  // namespace automodel::ops
