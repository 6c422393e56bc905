#pragma once
// 16 floats as one value (GCC / Clang vector extensions: one zmm register with AVX-512, two ymm
// without) and its loads and stores from f32 or bf16 storage, for kernels written once for both.
// Loads and stores go through memcpy, so any alignment (and aliasing) is fine.
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace automodel::cpu::vec16 {

using vf = float __attribute__((vector_size(64)));
using vi = int32_t __attribute__((vector_size(64)));
using vu = uint32_t __attribute__((vector_size(64)));
using vh = uint16_t __attribute__((vector_size(32)));
constexpr int64_t kW = 16;

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline vf load(const bf16* p) {
  vh h;
  std::memcpy(&h, p, sizeof(h));
  const vu u = __builtin_convertvector(h, vu) << 16;
  vf f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }
// Rounds to nearest even as float_to_bf16 does (NaN stays a quiet NaN).
inline void store(bf16* p, vf v) {
  vu u;
  std::memcpy(&u, &v, sizeof(u));
  const vu hi = u >> 16;
  const vu rounded = (u + 0x7fffu + (hi & 1u)) >> 16;
  const vu r = (u & 0x7fffffffu) > 0x7f800000u ? (hi | 0x40u) : rounded;
  const vh h = __builtin_convertvector(r, vh);
  std::memcpy(static_cast<void*>(p), &h, sizeof(h));
}

}  // namespace automodel::cpu::vec16
