#pragma once
// Row-parallel loops that also sum per-column values (a norm's weight gradient) without races:
// each fixed chunk of rows gets its own zeroed partial sums, reduced afterwards in chunk order so
// the result does not depend on thread scheduling.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "core/threads.h"

namespace automodel::cpu {

// Runs fn(row, acc) for every row in parallel. Rows are split into fixed contiguous chunks, each
// with its own zeroed buffer of `width` sums (acc); the buffers [chunks, width] are returned so the
// caller can reduce them in chunk order, which keeps the result independent of scheduling.
template <class C, class F>
std::vector<C> rows_with_partials(int64_t rows, int64_t width, int64_t hidden, F&& fn) {
  const int64_t grain_rows = std::max<int64_t>(1, 4096 / std::max<int64_t>(hidden, 1));
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(num_threads(), (rows + grain_rows - 1) / grain_rows));
  std::vector<C> partial(size_t(chunks * width), C(0));
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    C* acc = width ? partial.data() + c * width : nullptr;
    for (int64_t r = rows * c / chunks; r < rows * (c + 1) / chunks; ++r) fn(r, acc);
  }
  return partial;
}

template <class C, class T>
void reduce_partials(const std::vector<C>& partial, int64_t width, int64_t offset, int64_t n, T* out) {
  const int64_t chunks = width ? int64_t(partial.size()) / width : 0;
  for (int64_t h = 0; h < n; ++h) {
    C s = 0;
    for (int64_t c = 0; c < chunks; ++c) s += partial[size_t(c * width + offset + h)];
    out[h] = from_compute<T>(s);
  }
}

}  // namespace automodel::cpu
