#pragma once
// The decoder's layers as transformers' eager PyTorch code computes them, one primitive op (and one
// backward node) at a time: RMSNorm, rotary embeddings, materialised attention. They are the "off"
// side of model.use_liger_kernel / attn_implementation: eager, so a fused kernel can be A/B-timed
// and checked against an independent composition with one override.
#include "core/tensor.h"
#include "ops/attention.h"

namespace automodel::nn {

// LlamaRMSNorm: x in fp32, x * rsqrt(mean(x^2) + eps), back to x's dtype, times weight; Gemma
// (unit_offset): times (1 + weight) in fp32, then back to x's dtype.
Tensor rms_norm_eager(const Tensor& x, const Tensor& weight, double eps, bool unit_offset);

// apply_rotary_pos_emb with rotate_half on the first 2 * inv_freq.numel() dims of x [B, T, H, D]
// (the rest pass through): cos / sin of float(position) * inv_freq in fp32, times
// attention_scaling, rounded to x's dtype; x * cos + rotate_half(x) * sin in x's dtype.
Tensor rope_eager(const Tensor& x, const Tensor& position_ids, const Tensor& inv_freq, double attention_scaling);

// eager_attention_forward: scores = q k^T * scale (soft-capped) in q's dtype, an additive mask
// (causal, window, sequence ids; masked = lowest finite fp32), softmax in fp32, back to q's dtype,
// times v; with sinks, each head's sink joins every row as one more score column, dropped after the softmax.
// Grouped-query heads are handled by grouping the queries of each kv head (no K/V copies). Same layouts and options as
// ops::attention.
Tensor attention_eager(const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttentionOptions& options);

}  // namespace automodel::nn
