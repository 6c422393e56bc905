#pragma once
// Token routing for mixture-of-experts layers. Each of `tokens` tokens goes to k experts (slot t * k + j is token t's
// j-th choice); the slots are laid out expert after expert ("expert order") so that one grouped GEMM runs every
// expert on a contiguous block of rows. positions[t * k + j] is the row of slot t * k + j in expert order.
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

// counts[e] = number of slots with experts[s] == e; positions[s] = the row of slot s in expert order (experts in
// increasing order, slots of one expert in increasing slot order). experts[s] must be in [0, num_experts).
void moe_routing(const int64_t* experts, int64_t slots, int64_t num_experts, int64_t* counts, int64_t* positions);

// out[positions[t * k + j], :] = x[t, :]: x [tokens, hidden] into expert order [tokens * k, hidden].
template <class T>
void moe_permute_forward(const T* x, const int64_t* positions, int64_t tokens, int64_t k, int64_t hidden, T* out);

// dx[t, :] = sum over j of g[positions[t * k + j], :] (in the compute type).
template <class T>
void moe_permute_backward(const T* g, const int64_t* positions, int64_t tokens, int64_t k, int64_t hidden, T* dx);

// out[t, :] = sum over j of weights[t, j] * y[positions[t * k + j], :] (in the compute type, j in order): the
// experts' outputs [tokens * k, hidden] in expert order, weighted and added back per token.
template <class T>
void moe_unpermute_forward(const T* y, const T* weights, const int64_t* positions, int64_t tokens, int64_t k,
                           int64_t hidden, T* out);

// dy[positions[t * k + j], :] = weights[t, j] * g[t, :]; dweights[t, j] = <g[t, :], y[positions[t * k + j], :]>.
// Either output may be null (not wanted).
template <class T>
void moe_unpermute_backward(const T* g, const T* y, const T* weights, const int64_t* positions, int64_t tokens,
                            int64_t k, int64_t hidden, T* dy, T* dweights);

}  // namespace automodel::cpu
