#include "kernels/cpu/moe_permute.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/threads.h"

namespace automodel::cpu {

namespace {

int64_t token_grain(int64_t k, int64_t hidden) {
  return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, k * hidden));
}

}  // namespace

void moe_routing(const int64_t* experts, int64_t slots, int64_t num_experts, int64_t* counts, int64_t* positions) {
  std::fill(counts, counts + num_experts, int64_t(0));
  for (int64_t s = 0; s < slots; ++s) ++counts[experts[s]];
  std::vector<int64_t> next(static_cast<size_t>(num_experts), 0);
  for (int64_t e = 1; e < num_experts; ++e) next[size_t(e)] = next[size_t(e - 1)] + counts[e - 1];
  for (int64_t s = 0; s < slots; ++s) positions[s] = next[size_t(experts[s])]++;
}

template <class T>
void moe_permute_forward(const T* x, const int64_t* positions, int64_t tokens, int64_t k, int64_t hidden, T* out) {
  parallel_for(tokens, token_grain(k, hidden), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      for (int64_t j = 0; j < k; ++j)
        std::memcpy(out + positions[t * k + j] * hidden, x + t * hidden, size_t(hidden) * sizeof(T));
  });
}

// out[t] = sum over token t's k rows of src (times weights[t, j] when given): the way back from expert order.
template <class T>
void gather_rows_sum(const T* src, const T* weights, const int64_t* positions, int64_t tokens, int64_t k,
                     int64_t hidden, T* out) {
  using C = compute_t<T>;
  parallel_for(tokens, token_grain(k, hidden), [&](int64_t begin, int64_t end) {
    std::vector<C> acc(static_cast<size_t>(hidden));
    for (int64_t t = begin; t < end; ++t) {
      std::fill(acc.begin(), acc.end(), C(0));
      for (int64_t j = 0; j < k; ++j) {
        const T* row = src + positions[t * k + j] * hidden;
        const C w = weights ? to_compute(weights[t * k + j]) : C(1);
        for (int64_t h = 0; h < hidden; ++h) acc[size_t(h)] += w * to_compute(row[h]);
      }
      for (int64_t h = 0; h < hidden; ++h) out[t * hidden + h] = from_compute<T>(acc[size_t(h)]);
    }
  });
}

template <class T>
void moe_permute_backward(const T* g, const int64_t* positions, int64_t tokens, int64_t k, int64_t hidden, T* dx) {
  gather_rows_sum<T>(g, nullptr, positions, tokens, k, hidden, dx);
}

template <class T>
void moe_unpermute_forward(const T* y, const T* weights, const int64_t* positions, int64_t tokens, int64_t k,
                           int64_t hidden, T* out) {
  gather_rows_sum(y, weights, positions, tokens, k, hidden, out);
}

template <class T>
void moe_unpermute_backward(const T* g, const T* y, const T* weights, const int64_t* positions, int64_t tokens,
                            int64_t k, int64_t hidden, T* dy, T* dweights) {
  using C = compute_t<T>;
  parallel_for(tokens, token_grain(k, hidden), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const T* gt = g + t * hidden;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t row = positions[t * k + j];
        if (dy) {
          const C w = to_compute(weights[t * k + j]);
          for (int64_t h = 0; h < hidden; ++h) dy[row * hidden + h] = from_compute<T>(w * to_compute(gt[h]));
        }
        if (dweights) {
          C dot = 0;
          const T* yr = y + row * hidden;
          for (int64_t h = 0; h < hidden; ++h) dot += to_compute(gt[h]) * to_compute(yr[h]);
          dweights[t * k + j] = from_compute<T>(dot);
        }
      }
    }
  });
}

#define AUTOMODEL_MOE_PERMUTE(T)                                                                                       \
  template void moe_permute_forward<T>(const T*, const int64_t*, int64_t, int64_t, int64_t, T*);                       \
  template void moe_permute_backward<T>(const T*, const int64_t*, int64_t, int64_t, int64_t, T*);                      \
  template void moe_unpermute_forward<T>(const T*, const T*, const int64_t*, int64_t, int64_t, int64_t, T*);           \
  template void moe_unpermute_backward<T>(const T*, const T*, const T*, const int64_t*, int64_t, int64_t, int64_t, T*, \
                                          T*);
AUTOMODEL_MOE_PERMUTE(float)
AUTOMODEL_MOE_PERMUTE(double)
AUTOMODEL_MOE_PERMUTE(bf16)
#undef AUTOMODEL_MOE_PERMUTE

}  // namespace automodel::cpu
