#pragma once
// Counter-based random numbers (Philox4x32-10): a stream is (seed, offset), so any element can be
// drawn in any thread and order, and saving / restoring the two numbers reproduces a run exactly.
#include <array>
#include <cstdint>

#include "core/tensor.h"

namespace automodel {

// Philox4x32-10: four 32-bit outputs for a 128-bit counter under a 64-bit key.
inline std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter_lo, uint64_t counter_hi = 0) {
  uint32_t c0 = uint32_t(counter_lo), c1 = uint32_t(counter_lo >> 32);
  uint32_t c2 = uint32_t(counter_hi), c3 = uint32_t(counter_hi >> 32);
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = uint64_t(0xD2511F53u) * c0;
    uint64_t p1 = uint64_t(0xCD9E8D57u) * c2;
    uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0;
    uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
    c1 = uint32_t(p1);
    c3 = uint32_t(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {c0, c1, c2, c3};
}

// A 32-bit integer hash (a counter-based source of random bits: the same input gives the same bits), on uint32_t or
// on vectors of them (GCC / Clang vector extensions).
template <class U>
inline U hash32(U x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// Uniform in [0, 1) with 24 random bits.
inline float uint32_to_unit_float(uint32_t x) { return float(x >> 8) * (1.0f / 16777216.0f); }

struct GeneratorState {
  uint64_t seed = 0;
  uint64_t offset = 0;  // 128-bit blocks already consumed
};

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : state_{seed, 0} {}
  void manual_seed(uint64_t seed) { state_ = {seed, 0}; }
  uint64_t seed() const { return state_.seed; }
  // Reserves `blocks` Philox blocks; returns the first block's counter.
  uint64_t reserve(uint64_t blocks) {
    uint64_t first = state_.offset;
    state_.offset += blocks;
    return first;
  }
  GeneratorState state() const { return state_; }
  void set_state(GeneratorState s) { state_ = s; }

 private:
  GeneratorState state_;
};

// The process-wide generator used when none is passed.
Generator& default_generator();
void manual_seed(uint64_t seed);

// New tensors of standard normal / uniform [lo, hi) values, drawn from `gen`.
Tensor randn(const Shape& shape, Generator& gen = default_generator(), DType dtype = DType::f32);
Tensor rand_uniform(const Shape& shape, double lo, double hi, Generator& gen = default_generator(),
                    DType dtype = DType::f32);

}  // namespace automodel
