#pragma once
// bf16 parameters updated in fp32: the master kept as two 16-bit halves, or (without a master) stochastic rounding.
//
// The fp32 master weight of a bf16 parameter kept as two 16-bit halves: the bf16 parameter itself (the master's
// round-to-nearest-even value, which the GEMMs read) and a 16-bit residual, so mixed precision costs 2 bytes per
// parameter for the master instead of 4 and needs no separate bf16 copy.
//
// A float with bits M rounds to the bf16 P; the residual is M's low half L. M's high half is P when the rounding
// went down (L < 0x8000, or a tie L == 0x8000 with an even high half) and P - 1 when it went up (L > 0x8000).
// 16 bits cannot name every float: an even P is the rounding of 65537 floats (both ties P*2^16 +- 0x8000), an odd
// P of 65535. The float a (P, L) pair cannot restore -- a tie rounded up (L == 0x8000, odd high half), or a NaN
// whose bits the quieting of float_to_bf16 changed -- is reported by split() so that the caller keeps that float
// on the side (about one float in 2^17 of random ones).
#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "core/rng.h"
#include "kernels/cpu/vec16.h"

namespace automodel::cpu::master {

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The float that bf16 bits p and residual r stand for.
inline float reconstruct(uint16_t p, uint16_t r) {
  const uint32_t hi = uint32_t(p) - (r > 0x8000u ? 1u : 0u);
  return float_of((hi << 16) | r);
}

// p = float_to_bf16(x), r = the low half of x; false when reconstruct(p, r) is not x bit for bit.
inline bool split(float x, uint16_t& p, uint16_t& r) {
  p = float_to_bf16(x).bits;
  r = uint16_t(bits_of(x));
  return bits_of(reconstruct(p, r)) == bits_of(x);
}

// The same over arrays (written so that the compiler vectorizes them).
inline void reconstruct_n(const bf16* __restrict p, const uint16_t* __restrict r, float* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t hi = uint32_t(p[i].bits) - (r[i] > 0x8000u ? 1u : 0u);
    const uint32_t u = (hi << 16) | r[i];
    std::memcpy(&x[i], &u, 4);
  }
}

// Returns true when every element restores exactly (else the caller looks for the ones that do not).
inline bool split_n(const float* __restrict x, bf16* __restrict p, uint16_t* __restrict r, int64_t n) {
  uint32_t bad = 0;
#pragma omp simd reduction(| : bad)
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, &x[i], 4);
    // float_to_bf16, branch-free: NaN keeps its high half, quieted; anything else rounds to nearest even.
    const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    const uint32_t hi = nan ? ((u >> 16) | 0x40u) : ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    const uint32_t lo = u & 0xffffu;
    p[i].bits = uint16_t(hi);
    r[i] = uint16_t(lo);
    const uint32_t back = ((hi - (lo > 0x8000u ? 1u : 0u)) << 16) | lo;
    bad |= back ^ u;
  }
  return bad == 0;
}

// bf16 stochastic rounding (torchao's bf16_stochastic_round): x rounds away from zero with probability
// (x's low 16 bits) / 2^16, else towards zero, so the expected bf16 value is x and updates below half an ulp are
// kept on average. The 16 random bits of element i come from a counter-based hash of (key, i / 2), its low half for
// even i and its high half for odd i: the same key and index give the same rounding, so a resumed run rounds as
// the uninterrupted one.
// The hash is core/rng.h's hash32, on 16 lanes at once (cpu::vec16::vu) in stochastic_round_n: left to the compiler,
// that loop runs on 8-lane vectors.
using automodel::hash32;

// Elements first .. first + n - 1 of x (first even) into p.
inline void stochastic_round_n(const float* __restrict x, bf16* __restrict p, int64_t n, uint32_t key, int64_t first) {
  using vec16::vu, vec16::vh, vec16::kW;
  const vu lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, zero = lane ^ lane;
  // 2 kW elements from one kW-lane hash: its 16-bit halves in memory order are the elements' random bits.
  auto round32 = [&](const float* in, void* out, int64_t i) {
    const vu h = hash32(key ^ hash32(uint32_t((first + i) / 2) + lane));
    vh rnd[2];
    std::memcpy(rnd, &h, sizeof(h));
    for (int k = 0; k < 2; ++k) {
      vu u;
      std::memcpy(&u, in + k * kW, sizeof(u));
      // x's high half, + 1 when rnd < x's low half; inf / NaN round as float_to_bf16 (NaN quieted).
      const vu special = (u >> 16) | ((u & 0x7fffffu) != 0 ? zero + 0x40u : zero);
      const vu rounded = (u >> 16) + (__builtin_convertvector(rnd[k], vu) < (u & 0xffffu) ? zero + 1u : zero);
      const vh b = __builtin_convertvector((u & 0x7f800000u) == 0x7f800000u ? special : rounded, vh);
      std::memcpy(static_cast<char*>(out) + k * sizeof(b), &b, sizeof(b));
    }
  };
  int64_t i = 0;
  for (; i + 2 * kW <= n; i += 2 * kW) round32(x + i, p + i, i);  // fixed-size copies: plain vector loads, stores
  if (i == n) return;
  // The tail goes through the same lanes, zero-padded.
  float in[2 * kW] = {};
  std::memcpy(in, x + i, size_t(n - i) * 4);
  uint16_t out[2 * kW];
  round32(in, out, i);
  std::memcpy(static_cast<void*>(p + i), out, size_t(n - i) * 2);
}

}  // namespace automodel::cpu::master
