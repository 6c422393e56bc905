#include "kernels/cpu/dropout.h"

#include <algorithm>
#include <cmath>

#include "core/rng.h"
#include "core/threads.h"

namespace automodel::cpu {

namespace {

constexpr int64_t kChunk = 1024;  // elements per inner chunk (multiple of 4)

// Elements with (r >> 8) < threshold are dropped: exactly uint32_to_unit_float(r) < p.
uint32_t drop_threshold(double p) { return uint32_t(std::ceil(p * 16777216.0)); }

// keep[0..count) for elements [start, start + count), start a multiple of 4.
inline void keep_bits(uint8_t* keep, int64_t start, int64_t count, uint32_t threshold, uint64_t seed,
                      uint64_t first_block) {
  uint32_t r[kChunk];
  const int64_t blocks = (count + 3) / 4;
  const uint64_t b0 = first_block + uint64_t(start / 4);
#pragma omp simd
  for (int64_t b = 0; b < blocks; ++b) {
    std::array<uint32_t, 4> v = philox4x32(seed, b0 + uint64_t(b));
    r[4 * b] = v[0];
    r[4 * b + 1] = v[1];
    r[4 * b + 2] = v[2];
    r[4 * b + 3] = v[3];
  }
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) keep[i] = (r[i] >> 8) >= threshold;
}

template <class T>
void apply_mask(const T* x, T* y, int64_t n, double p, uint64_t seed, uint64_t first_block) {
  using C = compute_t<T>;
  const C scale = C(1.0 / (1.0 - p));
  const uint32_t threshold = drop_threshold(p);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  parallel_for(chunks, 16, [&](int64_t begin, int64_t end) {
    uint8_t keep[kChunk];
    for (int64_t c = begin; c < end; ++c) {
      const int64_t s = c * kChunk, count = std::min(kChunk, n - s);
      keep_bits(keep, s, count, threshold, seed, first_block);
      const T* xp = x + s;
      T* yp = y + s;
#pragma omp simd
      for (int64_t i = 0; i < count; ++i) yp[i] = from_compute<T>(keep[i] ? to_compute(xp[i]) * scale : C(0));
    }
  });
}

}  // namespace

void dropout_forward(const float* x, float* y, int64_t n, double p, uint64_t seed, uint64_t first_block) {
  apply_mask(x, y, n, p, seed, first_block);
}
void dropout_forward(const double* x, double* y, int64_t n, double p, uint64_t seed, uint64_t first_block) {
  apply_mask(x, y, n, p, seed, first_block);
}
void dropout_forward(const bf16* x, bf16* y, int64_t n, double p, uint64_t seed, uint64_t first_block) {
  apply_mask(x, y, n, p, seed, first_block);
}
void dropout_backward(const float* g, float* gx, int64_t n, double p, uint64_t seed, uint64_t first_block) {
  apply_mask(g, gx, n, p, seed, first_block);
}
void dropout_backward(const double* g, double* gx, int64_t n, double p, uint64_t seed, uint64_t first_block) {
  apply_mask(g, gx, n, p, seed, first_block);
}
void dropout_backward(const bf16* g, bf16* gx, int64_t n, double p, uint64_t seed, uint64_t first_block) {
  apply_mask(g, gx, n, p, seed, first_block);
}

void dropout_mask(uint8_t* mask, int64_t n, double p, uint64_t seed, uint64_t first_block) {
  const uint32_t threshold = drop_threshold(p);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  parallel_for(chunks, 16, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t s = c * kChunk;
      keep_bits(mask + s, s, std::min(kChunk, n - s), threshold, seed, first_block);
    }
  });
}

}  // namespace automodel::cpu
