#include "kernels/cpu/adamw8bit.h"

#include <cmath>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX512F__)
// GCC 12's intrinsics trip -Wmaybe-uninitialized on their own _mm512_undefined_* (GCC PR 105593).
#pragma GCC diagnostic push
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include "core/error.h"
#include "kernels/cpu/cast.h"
#include "kernels/cpu/master_split.h"
#include "kernels/cpu/quant8.h"

namespace automodel::cpu {

namespace {

// torchao's single_param_adam, all in fp32 (its lr is an fp32 tensor, its step an fp32 counter), except that
// lr * (m / bc1) is taken as (lr / bc1) * m: a division less per element, within an ulp of the update.
using Scalars = kernels::Adam8Step;

// torch.lerp: start + w (end - start) for |w| < 0.5, else end - (end - start) (1 - w).
template <bool Lo>
inline float lerp(float start, float end, float w) {
  if constexpr (Lo)
    return start + w * (end - start);
  else
    return end - (end - start) * (1.0f - w);
}

// One element's update from its old moments; m and v become the new ones, unrounded.
template <bool Lo1, bool Lo2, class P>
inline void adamw_update(P& p, float g, float& m, float& v, const Scalars& s) {
  float pi = to_compute(p);
  pi = pi - s.lr_wd * pi;
  m = lerp<Lo1>(m, g, s.w1);
  v = lerp<Lo2>(v, g * g, s.w2);
  const float denom = std::sqrt(v) / s.bc2_sqrt + s.eps;
  pi = pi - s.step_size * m / denom;
  p = from_compute<P>(pi);
}

template <bool Lo1, bool Lo2, class P, class G>
void adamw8bit_kernel(P* __restrict p, const G* __restrict g, float* __restrict m, float* __restrict v, int64_t n,
                      const Scalars s) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) adamw_update<Lo1, Lo2>(p[i], to_compute(g[i]), m[i], v[i], s);
}

#if defined(__AVX512F__)
inline __m512 load16(const float* p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }
inline __m512 load16(const bf16* p, __mmask16 k) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p)), 16));
}

template <bool Lo>
inline __m512 lerp16(__m512 start, __m512 end, __m512 w) {
  if constexpr (Lo)
    return _mm512_add_ps(start, _mm512_mul_ps(w, _mm512_sub_ps(end, start)));
  else
    return _mm512_sub_ps(end, _mm512_mul_ps(_mm512_sub_ps(end, start), _mm512_sub_ps(_mm512_set1_ps(1.0f), w)));
}

// master::stochastic_round_n of x into p[0 .. 15] (the lanes in k), p being element `first` (even): its 16 random
// halves are those of the 8 hashes of first / 2 + 0 .. 7, in memory order. In intrinsics with merge masking: sharing
// stochastic_round_n's vector-extension rounding made the optimizer bench's 8-bit step ~20% slower.
inline void stochastic_round16(bf16* p, __mmask16 k, __m512 x, uint32_t key, int64_t first) {
  using u32x8 = uint32_t __attribute__((vector_size(32)));
  const u32x8 index = uint32_t(first / 2) + u32x8{0, 1, 2, 3, 4, 5, 6, 7};
  const u32x8 h = master::hash32(key ^ master::hash32(index));
  __m256i halves;
  std::memcpy(&halves, &h, sizeof(h));
  const __m512i rnd = _mm512_cvtepu16_epi32(halves), u = _mm512_castps_si512(x);
  const __m512i high = _mm512_srli_epi32(u, 16), exponent = _mm512_set1_epi32(0x7f800000);
  const __m512i up = _mm512_mask_add_epi32(
      high, _mm512_cmplt_epu32_mask(rnd, _mm512_and_si512(u, _mm512_set1_epi32(0xffff))), high, _mm512_set1_epi32(1));
  // inf / NaN as float_to_bf16: the high half, NaN quieted
  const __m512i special =
      _mm512_mask_or_epi32(high, _mm512_test_epi32_mask(u, _mm512_set1_epi32(0x7fffff)), high, _mm512_set1_epi32(0x40));
  const __mmask16 finite = _mm512_cmpneq_epi32_mask(_mm512_and_si512(u, exponent), exponent);
  _mm512_mask_cvtepi32_storeu_epi16(p, k, _mm512_mask_blend_epi32(finite, special, up));
}

constexpr bool kFusedRounding = true;  // adamw8bit_block rounds bf16 itself
#else
constexpr bool kFusedRounding = false;
#endif

// The update of n bf16 elements through an fp32 copy, rounded back as master::stochastic_round_n: for the updates
// without a bf16 kernel of their own.
template <class F>
void update_rounded(bf16* p, int64_t n, uint32_t key, int64_t first, F&& update_f32) {
  thread_local std::vector<float> x;
  x.resize(size_t(n));
  cast(p, x.data(), n);
  update_f32(x.data());
  master::stochastic_round_n(x.data(), p, n, key, first);
}

// adamw8bit_kernel over one block of 8-bit state, dequantizing the old moments as it reads them (values * scale,
// as dequantize_block) and leaving the new ones in m and v. Returns their blocks' scales (q8::block_scale).
// Rounds: bf16 p, its update rounded by stochastic_round16 (p being element `first`); AVX-512 only.
template <bool Lo1, bool Lo2, bool Rounds, class P, class G>
std::pair<float, float> adamw8bit_block(P* __restrict p, const G* __restrict g, const uint8_t* __restrict cm,
                                        const uint8_t* __restrict cv, float sm, float sv, float* __restrict m,
                                        float* __restrict v, int64_t n, const Scalars s, uint32_t key = 0,
                                        int64_t first = 0) {
  const float* __restrict tm = q8::signed_map().values();
  const float* __restrict tv = q8::unsigned_map().values();
#if defined(__AVX512F__)
  // Left to the compiler, the table reads stay scalar and the loop runs on 8 lanes.
  if constexpr (std::is_same_v<P, float> || Rounds) {
    const __m512 lr_wd = _mm512_set1_ps(s.lr_wd), step_size = _mm512_set1_ps(s.step_size);
    const __m512 w1 = _mm512_set1_ps(s.w1), w2 = _mm512_set1_ps(s.w2), eps = _mm512_set1_ps(s.eps);
    const __m512 bc2 = _mm512_set1_ps(s.bc2_sqrt), bc2_recip = _mm512_set1_ps(s.bc2_sqrt_recip);
    const __m512 vsm = _mm512_set1_ps(sm), vsv = _mm512_set1_ps(sv), inf = _mm512_set1_ps(INFINITY);
    __m512 max_m = _mm512_setzero_ps(), max_v = _mm512_setzero_ps();
    __mmask16 nan_m = 0, nan_v = 0;  // a NaN may drop out of a maximum; these keep it
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 k = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1u);
      const __m512i im = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, cm + i));
      const __m512i iv = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, cv + i));
      const __m512 gi = load16(g + i, k);
      __m512 pi = load16(p + i, k);
      pi = _mm512_sub_ps(pi, _mm512_mul_ps(lr_wd, pi));
      const __m512 mi = lerp16<Lo1>(_mm512_mul_ps(_mm512_i32gather_ps(im, tm, 4), vsm), gi, w1);
      const __m512 vi = lerp16<Lo2>(_mm512_mul_ps(_mm512_i32gather_ps(iv, tv, 4), vsv), _mm512_mul_ps(gi, gi), w2);
      // sqrt(v) / bc2_sqrt by div_by_reciprocal, rounded as the division of adamw_update
      const __m512 root = _mm512_sqrt_ps(vi), q = _mm512_mul_ps(root, bc2_recip);
      const __m512 exact = _mm512_fmadd_ps(_mm512_fnmadd_ps(q, bc2, root), bc2_recip, q);
      const __m512 denom =
          _mm512_add_ps(_mm512_mask_blend_ps(_mm512_cmp_ps_mask(_mm512_abs_ps(q), inf, _CMP_EQ_OQ), exact, q), eps);
      pi = _mm512_sub_ps(pi, _mm512_div_ps(_mm512_mul_ps(step_size, mi), denom));
      if constexpr (Rounds)
        stochastic_round16(p + i, k, pi, key, first + i);
      else
        _mm512_mask_storeu_ps(p + i, k, pi);
      _mm512_mask_storeu_ps(m + i, k, mi);
      _mm512_mask_storeu_ps(v + i, k, vi);
      max_m = _mm512_mask_max_ps(max_m, k, max_m, _mm512_abs_ps(mi));
      max_v = _mm512_mask_max_ps(max_v, k, max_v, _mm512_abs_ps(vi));
      nan_m |= _mm512_mask_cmp_ps_mask(k, mi, mi, _CMP_UNORD_Q);
      nan_v |= _mm512_mask_cmp_ps_mask(k, vi, vi, _CMP_UNORD_Q);
    }
    return {q8::block_scale(_mm512_reduce_max_ps(max_m), nan_m != 0),
            q8::block_scale(_mm512_reduce_max_ps(max_v), nan_v != 0)};
  } else
#endif
  {
    static_assert(!Rounds, "stochastic rounding in the block kernel needs AVX-512");
    float max_m = 0.0f, max_v = 0.0f;
    int nan = 0;  // bit 0: m, bit 1: v
#pragma omp simd reduction(max : max_m, max_v) reduction(| : nan)
    for (int64_t i = 0; i < n; ++i) {
      float mi = tm[cm[i]] * sm, vi = tv[cv[i]] * sv;
      adamw_update<Lo1, Lo2>(p[i], to_compute(g[i]), mi, vi, s);
      m[i] = mi;
      v[i] = vi;
      max_m = std::max(max_m, std::fabs(mi));
      max_v = std::max(max_v, std::fabs(vi));
      nan |= (mi != mi ? 1 : 0) | (vi != vi ? 2 : 0);
    }
    return {q8::block_scale(max_m, nan & 1), q8::block_scale(max_v, nan & 2)};
  }
}

template <class F>
void with_bool(bool b, F&& f) {
  if (b)
    f(std::true_type{});
  else
    f(std::false_type{});
}

// f(P{}, G{}) for the pairs a step meets: f32 / f32, bf16 / bf16, and an fp32 master with bf16 gradients; with
// stochastic rounding only bf16 / bf16.
template <class F>
void dispatch_types(DType target, DType grad, bool rounds, F&& f) {
  if (!rounds && target == DType::f32 && grad == DType::bf16) return f(float{}, bf16{});
  if (!rounds && target == DType::f32 && grad == DType::f32) return f(float{}, float{});
  if (target == DType::bf16 && grad == DType::bf16) return f(bf16{}, bf16{});
  throw Error(detail::str("AdamW8bit: no update for ", dtype_name(target), " parameters with ", dtype_name(grad),
                          " gradients", rounds ? " under stochastic rounding" : ""),
              "adamw8bit");
}

// f(L1, L2, R) with the scalars' lerp branches and the rounding as compile-time flags.
template <class F>
void with_flags(const Scalars& s, bool rounds, F&& f) {
  with_bool(std::abs(s.w1) < 0.5f, [&](auto lo1) {
    with_bool(std::abs(s.w2) < 0.5f, [&](auto lo2) { with_bool(rounds, [&](auto r) { f(lo1, lo2, r); }); });
  });
}

}  // namespace

void adamw8bit_dense(DType p_dt, DType g_dt, const Scalars& s, void* pv, const void* gv, float* m, float* v, int64_t n,
                     bool rounds, uint32_t key, int64_t first) {
  dispatch_types(p_dt, g_dt, rounds, [&](auto ptag, auto gtag) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    P* p = static_cast<P*>(pv);
    const G* g = static_cast<const G*>(gv);
    with_flags(s, rounds, [&](auto l1, auto l2, auto r) {
      constexpr bool L1 = decltype(l1)::value, L2 = decltype(l2)::value, R = decltype(r)::value;
      if constexpr (R && std::is_same_v<P, bf16>)
        update_rounded(p, n, key, first, [&](float* x) { adamw8bit_kernel<L1, L2>(x, g, m, v, n, s); });
      else if constexpr (!R)
        adamw8bit_kernel<L1, L2>(p, g, m, v, n, s);
    });
  });
}

void adamw8bit_blocks(DType p_dt, DType g_dt, const Scalars& s, void* pv, const void* gv, uint8_t* cm, uint8_t* cv,
                      float* sm, float* sv, int64_t n, int64_t bs, bool rounds, uint32_t key, int64_t first) {
  const q8::QuantMap& qm = q8::signed_map();
  const q8::QuantMap& qv = q8::unsigned_map();
  dispatch_types(p_dt, g_dt, rounds, [&](auto ptag, auto gtag) {
    using P = decltype(ptag);
    using G = decltype(gtag);
    P* p = static_cast<P*>(pv);
    const G* g = static_cast<const G*>(gv);
    with_flags(s, rounds, [&](auto l1, auto l2, auto r) {
      constexpr bool L1 = decltype(l1)::value, L2 = decltype(l2)::value, R = decltype(r)::value;
      if constexpr (!R || std::is_same_v<P, bf16>) {
        thread_local std::vector<float> m, v;
        m.resize(size_t(bs));
        v.resize(size_t(bs));
        for (int64_t b = 0; b < n / bs; ++b) {
          const int64_t o = b * bs;
          if constexpr (R && !kFusedRounding)
            update_rounded(p + o, bs, key, first + o, [&](float* x) {
              std::tie(sm[b], sv[b]) =
                  adamw8bit_block<L1, L2, false>(x, g + o, cm + o, cv + o, sm[b], sv[b], m.data(), v.data(), bs, s);
            });
          else
            std::tie(sm[b], sv[b]) = adamw8bit_block<L1, L2, R>(p + o, g + o, cm + o, cv + o, sm[b], sv[b], m.data(),
                                                                v.data(), bs, s, key, first + o);
          q8::quantize_scaled(qm, m.data(), bs, sm[b], cm + o);
          q8::quantize_scaled(qv, v.data(), bs, sv[b], cv + o);
        }
      }
    });
  });
}

}  // namespace automodel::cpu
