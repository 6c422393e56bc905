#pragma once
// Cross-entropy of [rows, vocab] logits against integer labels, in compute_t<T> (fp32; f64 for
// double), with numerically stable log-sum-exp.
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

// For each row: stats[2r] = m = max(logits[r, :]), stats[2r + 1] = log(sum(exp(logits[r, :] - m)))
// and loss[r] = stats[2r + 1] - (logits[r, labels[r]] - m); loss and stats are 0 where labels[r] ==
// ignore_index. Labels must be ignore_index or in [0, vocab).
template <class T>
void cross_entropy_forward(const T* logits, const int64_t* labels, int64_t rows, int64_t vocab, int64_t ignore_index,
                           compute_t<T>* loss, compute_t<T>* stats);

// dlogits[r, :] = (softmax(logits[r, :]) - onehot(labels[r])) * grad[r * grad_stride] * scale, the
// softmax as exp((logits - m) - logsum) from the forward's stats; rows with an ignored label get
// zeros. grad_stride is 1 for per-row gradients, 0 for one shared value.
template <class T>
void cross_entropy_backward(const T* logits, const int64_t* labels, const compute_t<T>* stats, const T* grad,
                            int64_t grad_stride, double scale, int64_t rows, int64_t vocab, int64_t ignore_index,
                            T* dlogits);

// The number of labels that are not ignore_index; -1 when one lies outside [0, vocab), its position then in
// *bad_position.
int64_t count_labels(const int64_t* labels, int64_t n, int64_t vocab, int64_t ignore_index, int64_t* bad_position);

// start + x[0] + x[1] + ... + x[n - 1], one addition after another in double: how the losses of the rows add up
// (the same sum for any thread count).
template <class C>
double sum_in_order(const C* x, int64_t n, double start);

}  // namespace automodel::cpu
