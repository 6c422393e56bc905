#pragma once
// Cross-entropy over logits, skipping ignored labels.
#include "core/tensor.h"

namespace automodel::ops {

enum class Reduction { none, sum, mean };

// logits [N, V], labels [N] (i64). Positions labelled ignore_index contribute nothing; mean divides
// by the number of other positions (torch semantics). Labels outside [0, V) are an Error.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, Reduction reduction = Reduction::mean,
                     int64_t ignore_index = -100);

}  // namespace automodel::ops
