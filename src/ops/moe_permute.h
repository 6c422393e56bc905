#pragma once
// Token routing for mixture-of-experts layers (kernels/cpu/moe_permute.h): the tokens' expert choices sorted into
// expert order, the gather of token rows into that order and the weighted scatter-add of the experts' outputs back.
// Capacity-free: every choice gets its row, none is dropped.
#include "core/tensor.h"

namespace automodel::ops {

struct MoeRouting {
  Tensor counts;     // [num_experts] i64: rows per expert in expert order
  Tensor positions;  // [tokens * k] i64: the row in expert order of token t's j-th choice (t * k + j)
  int64_t tokens = 0, k = 0;
};

// experts [tokens, k] i64 (e.g. topk's indices), each in [0, num_experts); an index outside is an Error.
MoeRouting moe_routing(const Tensor& experts, int64_t num_experts);

// x [tokens, hidden] -> [tokens * k, hidden], row positions[t * k + j] = x[t] (gradient: the k rows summed back).
Tensor moe_permute(const Tensor& x, const MoeRouting& routing);

// y [tokens * k, hidden] in expert order, weights [tokens, k] (y's dtype) -> [tokens, hidden]:
// out[t] = sum over j of weights[t, j] * y[positions[t * k + j]]. Differentiable in y and weights.
Tensor moe_unpermute(const Tensor& y, const Tensor& weights, const MoeRouting& routing);

}  // namespace automodel::ops
