#pragma once
// Inverted dropout with a counter-based mask: the same generator state gives the same mask, so a
// checkpointed region recomputes it exactly.
#include "core/rng.h"
#include "core/tensor.h"

namespace automodel::ops {

// Zeroes each element with probability p and scales the rest by 1/(1-p); identity when !training
// or p == 0.
Tensor dropout(const Tensor& x, double p, bool training = true, Generator& gen = default_generator());

}  // namespace automodel::ops
