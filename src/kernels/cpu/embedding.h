#pragma once
// Embedding lookup: rows of a [vocab, hidden] table gathered by integer ids, and the scatter-add
// of their gradient back into a dense [vocab, hidden] table.
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

// Index of the first id outside [0, vocab), or -1 when all are valid. I is int32_t or int64_t.
template <class I>
int64_t embedding_first_bad_id(const I* ids, int64_t n, int64_t vocab);

// out[i, :] = weight[ids[i], :] for i < n. Ids must be valid. T is float, double or bf16.
template <class I, class T>
void embedding_forward(const I* ids, int64_t n, const T* weight, int64_t hidden, T* out);

// dweight[v, :] = sum of grad[i, :] over i with ids[i] == v (summed in the compute type, in a fixed
// order); rows never looked up, and the row of padding_idx (>= 0), are zero. Writes all of dweight.
template <class I, class T>
void embedding_backward(const I* ids, int64_t n, const T* grad, int64_t vocab, int64_t hidden, int64_t padding_idx,
                        T* dweight);

}  // namespace automodel::cpu
