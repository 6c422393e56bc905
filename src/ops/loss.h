#pragma once
// Cross-entropy over logits, skipping ignored labels: the whole [N, V] at once, or chunk rows at a time.
#include "core/tensor.h"

namespace automodel::ops {

enum class Reduction { none, sum, mean };

// logits [N, V], labels [N] (i64). Positions labelled ignore_index contribute nothing; mean divides
// by the number of other positions (torch semantics). Labels outside [0, V) are an Error.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, Reduction reduction = Reduction::mean,
                     int64_t ignore_index = -100);

// scale * the sum over rows of cross_entropy(logits [N, V], labels [N]), chunk rows at a time in one autograd node
// that keeps only logits and labels and recomputes each chunk's softmax in backward: the working set is one
// [chunk, V] slice in the compute type. Labels must be ignore_index or in [0, V) (the caller checks them). A scalar
// of the compute type (f32 for f32 and bf16, f64 for f64).
Tensor chunked_cross_entropy(const Tensor& logits, const Tensor& labels, int64_t chunk, int64_t ignore_index,
                             double scale);

}  // namespace automodel::ops
