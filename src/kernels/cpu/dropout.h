#pragma once
// Inverted dropout with a counter-based mask: element i is dropped when the uniform
// uint32_to_unit_float(philox4x32(seed, first_block + i / 4)[i % 4]) is below p, so the mask is
// the same in any thread order and the backward regenerates it from (seed, first_block).
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

// y[i] = keep(i) ? x[i] / (1 - p) : 0 for 0 < p < 1; uses ceil(n / 4) Philox blocks.
void dropout_forward(const float* x, float* y, int64_t n, double p, uint64_t seed, uint64_t first_block);
void dropout_forward(const double* x, double* y, int64_t n, double p, uint64_t seed, uint64_t first_block);
void dropout_forward(const bf16* x, bf16* y, int64_t n, double p, uint64_t seed, uint64_t first_block);

// gx[i] = keep(i) ? g[i] / (1 - p) : 0, the same mask as the forward with the same (seed, first_block).
void dropout_backward(const float* g, float* gx, int64_t n, double p, uint64_t seed, uint64_t first_block);
void dropout_backward(const double* g, double* gx, int64_t n, double p, uint64_t seed, uint64_t first_block);
void dropout_backward(const bf16* g, bf16* gx, int64_t n, double p, uint64_t seed, uint64_t first_block);

// mask[i] = keep(i) (1 or 0), for tests and callers that want the mask itself.
void dropout_mask(uint8_t* mask, int64_t n, double p, uint64_t seed, uint64_t first_block);

}  // namespace automodel::cpu
