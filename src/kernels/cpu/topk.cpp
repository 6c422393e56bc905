#include "kernels/cpu/topk.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "core/threads.h"

namespace automodel::cpu {

template <class T>
void topk_forward(const T* x, int64_t rows, int64_t cols, int64_t k, T* values, int64_t* indices) {
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(cols, 1));
  parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> order(static_cast<size_t>(cols));
    for (int64_t r = begin; r < end; ++r) {
      const T* row = x + r * cols;
      std::iota(order.begin(), order.end(), int64_t(0));
      // a before b: a is larger (NaN largest), or equal and earlier.
      auto before = [row](int64_t a, int64_t b) {
        const double va = double(to_compute(row[a])), vb = double(to_compute(row[b]));
        const bool na = std::isnan(va), nb = std::isnan(vb);
        if (na != nb) return na;
        if (na || va == vb) return a < b;
        return va > vb;
      };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
      for (int64_t j = 0; j < k; ++j) {
        values[r * k + j] = row[order[size_t(j)]];
        indices[r * k + j] = order[size_t(j)];
      }
    }
  });
}

template <class T>
void topk_backward(const T* g, const int64_t* indices, int64_t rows, int64_t cols, int64_t k, T* gx) {
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(cols, 1));
  parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
    std::memset(static_cast<void*>(gx + begin * cols), 0, size_t((end - begin) * cols) * sizeof(T));
    for (int64_t r = begin; r < end; ++r)
      for (int64_t j = 0; j < k; ++j) gx[r * cols + indices[r * k + j]] = g[r * k + j];
  });
}

#define AUTOMODEL_TOPK(T)                                                           \
  template void topk_forward<T>(const T*, int64_t, int64_t, int64_t, T*, int64_t*); \
  template void topk_backward<T>(const T*, const int64_t*, int64_t, int64_t, int64_t, T*);
AUTOMODEL_TOPK(float)
AUTOMODEL_TOPK(double)
AUTOMODEL_TOPK(bf16)
#undef AUTOMODEL_TOPK

}  // namespace automodel::cpu
