#pragma once
// Scaled dot-product attention, tiled flash-attention style: the [Tq, Tk] score matrix is never
// formed; each thread works on 64 x 64 tiles with an online softmax, and backward recomputes the
// probabilities from q, k and the saved per-row log-sum-exp.
//
// Layouts (contiguous): q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv], out [B, Tq, Hq, Dv],
// lse [B, Hq, Tq]. Query head h reads key/value head h / (Hq / Hkv). Query row i sits at position
// i + Tk - Tq (the queries are the last Tq positions). Scores: s = scale * q.k, then
// softcap * tanh(s / softcap) when softcap > 0, then the masks (-inf where masked):
//   causal: key position <= query position (<= horizons[query position] when given);
//   window > 0: query position - key position < window;
//   seq_ids [B, Tk]: equal ids (the query's id is that of its position).
// A row with every key masked gets a zero output, lse = +inf and zero gradients. With sinks, head h's sink logit
// joins each row's softmax denominator (the row's lse includes it: a row with every key masked gets lse = sink and
// a zero output); the backward needs nothing else from it, as the sink takes no value, and writes
// dsinks[h] = -sum over rows of exp(sink[h] - lse) * delta (delta = dout . out).
#include <cstdint>

#include "core/dtype.h"
#include "kernels/shapes.h"

namespace automodel::cpu {

using kernels::AttentionShape;

// lse is f32 for f32/bf16 storage and f64 for f64.
void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* out, float* lse);
void attention_forward(const AttentionShape& s, const double* q, const double* k, const double* v, double* out,
                       double* lse);
void attention_forward(const AttentionShape& s, const bf16* q, const bf16* k, const bf16* v, bf16* out, float* lse);

// dout like out. dq may be null (not computed); dk and dv are both null or both set.
void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v, const float* out,
                        const float* dout, const float* lse, float* dq, float* dk, float* dv);
void attention_backward(const AttentionShape& s, const double* q, const double* k, const double* v, const double* out,
                        const double* dout, const double* lse, double* dq, double* dk, double* dv);
void attention_backward(const AttentionShape& s, const bf16* q, const bf16* k, const bf16* v, const bf16* out,
                        const bf16* dout, const float* lse, bf16* dq, bf16* dk, bf16* dv);

}  // namespace automodel::cpu
