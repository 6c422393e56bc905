#pragma once
// The LM-head loss fused with its projection: cross-entropy of logits = hidden @ weight^T (optionally
// soft-capped) and its gradients, computed a chunk of rows at a time so that no [rows, vocab] buffer
// ever exists. Training's loss path: the gradients are produced in the same sweep as the loss.
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "kernels/shapes.h"

namespace automodel::cpu {

using kernels::LinearCrossEntropyProblem;

// Bytes of workspace linear_cross_entropy needs for `p` in dtype T, with or without gradients.
size_t linear_cross_entropy_workspace(const LinearCrossEntropyProblem& p, DType dtype, bool want_grad);

// Returns the sum over rows whose label is not ignore_index of logsumexp(logits[r]) - logits[r, label].
// Rows with ignored labels cost nothing: only label rows are gathered, into equal chunks of at most
// p.chunk rows. A chunk's logits are computed in compute_t<T> (bf16: oneDNN, fp32 accumulation and fp32
// output); each row's softmax statistics (fp32), loss and gradient then take one sweep of the row while
// it is in cache, the gradient written over the logits (bf16 gradients into the first half of each row).
// dhidden [rows, hidden] (null: not wanted) gets dlogits @ weight, zeros on ignored rows (bf16: summed over
// vocabulary tiles in fp32, one rounding).
// dweight [vocab, hidden] (null: not wanted) is overwritten with dlogits^T @ hidden (or, with
// p.accumulate_dweight, has it added): the first chunk's GEMM writes it, later chunks add their GEMM's
// result (bf16: through an fp32 tile, one rounding per chunk). Labels must be ignore_index or in [0, vocab); workspace
// holds linear_cross_entropy_workspace bytes: p.chunk rows of logits plus [p.chunk, hidden] buffers and the tile, never
// [rows, vocab].
template <class T>
double linear_cross_entropy(const LinearCrossEntropyProblem& p, const T* hidden, const T* weight, const int64_t* labels,
                            T* dhidden, T* dweight, void* workspace);

}  // namespace automodel::cpu
