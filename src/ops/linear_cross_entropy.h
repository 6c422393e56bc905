#pragma once
// The LM head fused with its cross-entropy loss (kernels/cpu/linear_cross_entropy.h): logits = hidden @ weight^T
// are formed a chunk of label rows at a time and never as a whole [N, V] tensor, and the gradients are computed in
// the same sweep as the loss, inside one autograd node whose backward only scales them by the upstream gradient.
#include <cstdint>

#include "core/tensor.h"

namespace automodel::ops {

struct LinearCrossEntropyOptions {
  int64_t chunk = 1;  // label rows per chunk (the working set is chunk x V logits)
  int64_t ignore_index = -100;
  double softcap = 0;  // > 0: logits = softcap * tanh((hidden @ weight^T) / softcap)
  double scale = 1;    // the loss (and its gradients) times this: 1 / number of label tokens
  // When the weight is a leaf whose .grad buffer already exists, d(weight) is added into it during forward (the loss
  // must then be backpropagated once, with upstream gradient 1).
  bool weight_grad_in_place = false;
};

// scale * the sum over rows whose label is not ignore_index of logsumexp(logits[r]) - logits[r, label], for hidden
// [N, H], weight [V, H] (same dtype) and labels [N] (i64, each ignore_index or in [0, V): the caller checks them).
// A scalar in the compute type (f32 for bf16 and f32, f64 for f64). Inputs that need no gradient cost no gradient
// work; under NoGradGuard only the loss is computed.
Tensor linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& labels,
                            const LinearCrossEntropyOptions& options);

}  // namespace automodel::ops
