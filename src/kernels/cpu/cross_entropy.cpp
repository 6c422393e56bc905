#include "kernels/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/threads.h"
#include "kernels/cpu/fast_math.h"

namespace automodel::cpu {

namespace {

constexpr int64_t kLanes = 16;    // independent partial results: one AVX-512 register of floats
constexpr int64_t kBlock = 2048;  // elements per block whose lane sums are added into a double

template <class T>
compute_t<T> row_max(const T* x, int64_t vocab) {
  using C = compute_t<T>;
  C lane[kLanes];
  for (int64_t j = 0; j < kLanes; ++j) lane[j] = -std::numeric_limits<C>::infinity();
  int64_t v = 0;
  for (; v + kLanes <= vocab; v += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) {
      const C e = to_compute(x[v + j]);
      lane[j] = lane[j] > e ? lane[j] : e;
    }
  C m = -std::numeric_limits<C>::infinity();
  for (int64_t j = 0; j < kLanes; ++j) m = std::max(m, lane[j]);
  for (; v < vocab; ++v) m = std::max(m, C(to_compute(x[v])));
  return m;
}

// sum(exp(x - m)): kLanes running sums per block, blocks summed in double.
template <class T>
double row_sum_exp(const T* x, int64_t vocab, compute_t<T> m) {
  using C = compute_t<T>;
  double total = 0;
  for (int64_t b = 0; b < vocab; b += kBlock) {
    const int64_t e = std::min(vocab, b + kBlock);
    C lane[kLanes] = {};
    int64_t v = b;
    for (; v + kLanes <= e; v += kLanes)
      for (int64_t j = 0; j < kLanes; ++j) lane[j] += exp_fast(C(to_compute(x[v + j]) - m));
    C s = 0;
    for (; v < e; ++v) s += exp_fast(C(to_compute(x[v]) - m));
    for (int64_t j = 0; j < kLanes; ++j) s += lane[j];
    total += double(s);
  }
  return total;
}

// The row's max and log(sum(exp(x - max))), kept apart so that x - max - logsum stays exact for
// large logits (as torch's log_softmax computes it).
template <class T>
void row_stats(const T* x, int64_t vocab, compute_t<T>* max_out, compute_t<T>* logsum_out) {
  using C = compute_t<T>;
  const C m = row_max(x, vocab);
  if (!std::isfinite(m)) {
    // A +inf / NaN somewhere, or all -inf: the plain formula gives NaN / inf as torch does.
    C s = 0;
    for (int64_t v = 0; v < vocab; ++v) s += std::exp(to_compute(x[v]) - m);
    *max_out = m;
    *logsum_out = std::log(s);
    return;
  }
  *max_out = m;
  *logsum_out = C(std::log(row_sum_exp(x, vocab, m)));
}

int64_t row_grain(int64_t vocab) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(vocab, 1)); }

}  // namespace

template <class T>
void cross_entropy_forward(const T* logits, const int64_t* labels, int64_t rows, int64_t vocab, int64_t ignore_index,
                           compute_t<T>* loss, compute_t<T>* stats) {
  using C = compute_t<T>;
  parallel_for(rows, row_grain(vocab), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t label = labels[r];
      if (label == ignore_index) {
        loss[r] = C(0);
        stats[2 * r] = stats[2 * r + 1] = C(0);
        continue;
      }
      const T* x = logits + r * vocab;
      C m, logsum;
      row_stats(x, vocab, &m, &logsum);
      stats[2 * r] = m;
      stats[2 * r + 1] = logsum;
      loss[r] = logsum - (C(to_compute(x[label])) - m);
    }
  });
}

template <class T>
void cross_entropy_backward(const T* logits, const int64_t* labels, const compute_t<T>* stats, const T* grad,
                            int64_t grad_stride, double scale, int64_t rows, int64_t vocab, int64_t ignore_index,
                            T* dlogits) {
  using C = compute_t<T>;
  parallel_for(rows, row_grain(vocab), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      T* d = dlogits + r * vocab;
      const int64_t label = labels[r];
      if (label == ignore_index) {
        std::memset(static_cast<void*>(d), 0, size_t(vocab) * sizeof(T));
        continue;
      }
      const T* x = logits + r * vocab;
      const C m = stats[2 * r], logsum = stats[2 * r + 1];
      const C s = C(to_compute(grad[r * grad_stride]) * scale);
#pragma omp simd
      for (int64_t v = 0; v < vocab; ++v) d[v] = from_compute<T>(exp_fast(C((to_compute(x[v]) - m) - logsum)) * s);
      d[label] = from_compute<T>((exp_fast(C((to_compute(x[label]) - m) - logsum)) - C(1)) * s);
    }
  });
}

#define AM_CROSS_ENTROPY_INSTANTIATE(T)                                                                             \
  template void cross_entropy_forward<T>(const T*, const int64_t*, int64_t, int64_t, int64_t, compute_t<T>*,        \
                                         compute_t<T>*);                                                            \
  template void cross_entropy_backward<T>(const T*, const int64_t*, const compute_t<T>*, const T*, int64_t, double, \
                                          int64_t, int64_t, int64_t, T*);
AM_CROSS_ENTROPY_INSTANTIATE(float)
AM_CROSS_ENTROPY_INSTANTIATE(double)
AM_CROSS_ENTROPY_INSTANTIATE(bf16)
#undef AM_CROSS_ENTROPY_INSTANTIATE

int64_t count_labels(const int64_t* labels, int64_t n, int64_t vocab, int64_t ignore_index, int64_t* bad_position) {
  int64_t count = 0;
  for (int64_t r = 0; r < n; ++r) {
    if (labels[r] == ignore_index) continue;
    if (labels[r] < 0 || labels[r] >= vocab) {
      *bad_position = r;
      return -1;
    }
    ++count;
  }
  return count;
}

template <class C>
double sum_in_order(const C* x, int64_t n, double start) {
  double total = start;
  for (int64_t r = 0; r < n; ++r) total += double(x[r]);
  return total;
}

template double sum_in_order(const float*, int64_t, double);
template double sum_in_order(const double*, int64_t, double);

}  // namespace automodel::cpu
