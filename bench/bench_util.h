#pragma once
// Helpers shared by the micro-benchmarks.
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "core/threads.h"

namespace automodel::bench {

// Applies AUTOMODEL_NUM_THREADS / OMP_NUM_THREADS once, before the first benchmark runs.
inline void init_threads() {
  static bool done = [] {
    set_num_threads(0);
    return true;
  }();
  (void)done;
}

// n standard-normal values (times `scale`) stored as T.
template <class T>
std::vector<T> random_buffer(int64_t n, uint64_t seed, float scale = 1.0f) {
  Generator gen(seed);
  Tensor t = randn({n}, gen, DType::f32);
  const float* p = t.data<float>();
  std::vector<T> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = from_compute<T>(p[i] * scale);
  return v;
}

}  // namespace automodel::bench
