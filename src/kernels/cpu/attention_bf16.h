#pragma once
// bf16 attention on AVX512-BF16: every tile product is a bf16 dot product with fp32 accumulation
// (AMX tiles where amx_bf16_enabled(), else vdpbf16ps), softmax statistics stay fp32, and backward
// is one pass over the tiles. attention.cpp calls it for bf16 inputs when the build targets
// AVX512-BF16 and the queries fill a tile; the shapes, layouts and masks are those of attention.h.
#include "kernels/cpu/attention.h"

namespace automodel::cpu::detail {

// dsinks of attention.h from the forward's lse and the rows' delta = dout . out ([B, Hq, Tq] each); nothing without
// s.dsinks. Shared by the generic and the AVX512-BF16 backward.
void sink_gradients(const AttentionShape& s, const float* lse, const float* delta);
void sink_gradients(const AttentionShape& s, const double* lse, const double* delta);

#if defined(__AVX512BF16__)
// Whether this kernel serves the shape (enough queries that a 64-query tile is not mostly padding).
bool dpbf16_attention_serves(const AttentionShape& s);
void attention_forward_dpbf16(const AttentionShape& s, const bf16* q, const bf16* k, const bf16* v, bf16* out,
                              float* lse);
void attention_backward_dpbf16(const AttentionShape& s, const bf16* q, const bf16* k, const bf16* v, const bf16* out,
                               const bf16* dout, const float* lse, bf16* dq, bf16* dk, bf16* dv);
#endif

}  // namespace automodel::cpu::detail
