#pragma once
// Softmax and log-softmax along one dim (fp32 statistics for bf16 inputs).
#include "core/tensor.h"

namespace automodel::ops {

Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);

}  // namespace automodel::ops
