#include "kernels/cpu/embedding.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "core/threads.h"

namespace automodel::cpu {

template <class I>
int64_t embedding_first_bad_id(const I* ids, int64_t n, int64_t vocab) {
  for (int64_t i = 0; i < n; ++i)
    if (int64_t(ids[i]) < 0 || int64_t(ids[i]) >= vocab) return i;
  return -1;
}

template <class I, class T>
void embedding_forward(const I* ids, int64_t n, const T* weight, int64_t hidden, T* out) {
  const int64_t grain = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(hidden, 1));
  parallel_for(n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      std::memcpy(out + i * hidden, weight + int64_t(ids[i]) * hidden, size_t(hidden) * sizeof(T));
  });
}

template <class I, class T>
void embedding_backward(const I* ids, int64_t n, const T* grad, int64_t vocab, int64_t hidden, int64_t padding_idx,
                        T* dweight) {
  using C = compute_t<T>;
  // Zero the table, then give each distinct id to one thread: no two threads write the same row.
  parallel_for(vocab, std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(hidden, 1)), [&](int64_t b, int64_t e) {
    std::memset(static_cast<void*>(dweight + b * hidden), 0, size_t((e - b) * hidden) * sizeof(T));
  });
  // (id, position) pairs sorted by id then position: a deterministic summation order per row.
  std::vector<std::pair<int64_t, int64_t>> order;
  order.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i)
    if (int64_t(ids[i]) != padding_idx) order.emplace_back(int64_t(ids[i]), i);
  std::sort(order.begin(), order.end());
  std::vector<int64_t> starts;  // start of each run of equal ids in `order`, plus the end
  for (size_t k = 0; k < order.size(); ++k)
    if (k == 0 || order[k].first != order[k - 1].first) starts.push_back(int64_t(k));
  starts.push_back(int64_t(order.size()));
  const int64_t groups = int64_t(starts.size()) - 1;
  const int64_t grain = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(hidden, 1));
  parallel_for(groups, grain, [&](int64_t gb, int64_t ge) {
    std::vector<C> acc(static_cast<size_t>(hidden));
    for (int64_t g = gb; g < ge; ++g) {
      std::fill(acc.begin(), acc.end(), C(0));
      for (int64_t k = starts[size_t(g)]; k < starts[size_t(g) + 1]; ++k) {
        const T* src = grad + order[size_t(k)].second * hidden;
        C* a = acc.data();
#pragma omp simd
        for (int64_t h = 0; h < hidden; ++h) a[h] += to_compute(src[h]);
      }
      T* dst = dweight + order[size_t(starts[size_t(g)])].first * hidden;
      for (int64_t h = 0; h < hidden; ++h) dst[h] = from_compute<T>(acc[size_t(h)]);
    }
  });
}

template int64_t embedding_first_bad_id<int32_t>(const int32_t*, int64_t, int64_t);
template int64_t embedding_first_bad_id<int64_t>(const int64_t*, int64_t, int64_t);

#define AM_EMBEDDING_INSTANTIATE(I, T)                                             \
  template void embedding_forward<I, T>(const I*, int64_t, const T*, int64_t, T*); \
  template void embedding_backward<I, T>(const I*, int64_t, const T*, int64_t, int64_t, int64_t, T*);
AM_EMBEDDING_INSTANTIATE(int32_t, float)
AM_EMBEDDING_INSTANTIATE(int32_t, double)
AM_EMBEDDING_INSTANTIATE(int32_t, bf16)
AM_EMBEDDING_INSTANTIATE(int64_t, float)
AM_EMBEDDING_INSTANTIATE(int64_t, double)
AM_EMBEDDING_INSTANTIATE(int64_t, bf16)
#undef AM_EMBEDDING_INSTANTIATE

}  // namespace automodel::cpu
