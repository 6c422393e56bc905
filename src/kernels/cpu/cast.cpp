#include "kernels/cpu/cast.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "core/error.h"
#include "core/threads.h"

#if defined(__AVX512F__)
// GCC 12's intrinsics trip -Wmaybe-uninitialized on their own _mm512_undefined_* (GCC PR 105593).
#pragma GCC diagnostic push
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace automodel::cpu {

namespace {

constexpr int64_t kGrain = 1 << 15;

// ---------------------------------------------------------------------------------------------
// Serial loops over one chunk. The vector bodies give bit-identical results to the scalar
// float_to_bf16 / float_to_f16 of core/dtype.h, which the tails use.

void f32_to_bf16(const float* src, bf16* dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512i one = _mm512_set1_epi32(1), round = _mm512_set1_epi32(0x7fff);
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  const __m512i quiet = _mm512_set1_epi32(0x40);
  for (; i + 16 <= n; i += 16) {
    __m512i u = _mm512_loadu_si512(src + i);
    __m512i hi = _mm512_srli_epi32(u, 16);
    __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, round), _mm512_and_si512(hi, one)), 16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
    __m512i r = _mm512_mask_blend_epi32(nan, rounded, _mm512_or_si512(hi, quiet));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtepi32_epi16(r));
  }
#endif
  for (; i < n; ++i) dst[i] = float_to_bf16(src[i]);
}

void bf16_to_f32(const bf16* src, float* dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    _mm512_storeu_si512(dst + i, _mm512_slli_epi32(h, 16));
  }
#endif
  for (; i < n; ++i) dst[i] = bf16_to_float(src[i]);
}

void f32_to_f16(const float* src, f16* dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  const __m256i sign16 = _mm256_set1_epi16(int16_t(0x8000)), qnan16 = _mm256_set1_epi16(0x7e00);
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_loadu_ps(src + i);
    __m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // NaN: canonical quiet NaN with the sign kept (the hardware would keep payload bits).
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(_mm512_castps_si512(v), abs_mask), inf);
    if (nan) {
      __m256i canon = _mm256_or_si256(_mm256_and_si256(h, sign16), qnan16);
      alignas(32) uint16_t a[16], b[16];
      _mm256_store_si256(reinterpret_cast<__m256i*>(a), h);
      _mm256_store_si256(reinterpret_cast<__m256i*>(b), canon);
      for (int k = 0; k < 16; ++k)
        if (nan & (1u << k)) a[k] = b[k];
      h = _mm256_load_si256(reinterpret_cast<const __m256i*>(a));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), h);
  }
#endif
  for (; i < n; ++i) dst[i] = float_to_f16(src[i]);
}

void f16_to_f32(const f16* src, float* dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
#endif
  for (; i < n; ++i) dst[i] = f16_to_float(src[i]);
}

// ---------------------------------------------------------------------------------------------
// Generic element conversion through double (f64 -> bf16 / f16 goes through f32, as torch does).

template <class T>
constexpr bool is_half_v = std::is_same_v<T, bf16> || std::is_same_v<T, f16>;

template <class T>
double load(T v) {
  if constexpr (is_half_v<T>) {
    return double(to_compute(v));
  } else if constexpr (std::is_same_v<T, bool>) {
    return v ? 1.0 : 0.0;
  } else {
    return double(v);
  }
}

template <class I>
I saturate(double v) {
  if (std::isnan(v)) return I(0);
  v = std::trunc(v);
  if (v <= double(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
  if (v >= double(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  return I(v);
}

template <class D>
D store(double v) {
  if constexpr (std::is_same_v<D, bf16>) {
    return float_to_bf16(float(v));
  } else if constexpr (std::is_same_v<D, f16>) {
    return float_to_f16(float(v));
  } else if constexpr (std::is_same_v<D, bool>) {
    return v != 0.0;
  } else if constexpr (std::is_integral_v<D>) {
    return saturate<D>(v);
  } else {
    return D(v);
  }
}

template <class S, class D>
void convert_chunk(const S* src, D* dst, int64_t n) {
  if constexpr (std::is_same_v<S, D>) {
    std::copy(src, src + n, dst);
  } else if constexpr (std::is_same_v<S, float> && std::is_same_v<D, bf16>) {
    f32_to_bf16(src, dst, n);
  } else if constexpr (std::is_same_v<S, bf16> && std::is_same_v<D, float>) {
    bf16_to_f32(src, dst, n);
  } else if constexpr (std::is_same_v<S, float> && std::is_same_v<D, f16>) {
    f32_to_f16(src, dst, n);
  } else if constexpr (std::is_same_v<S, f16> && std::is_same_v<D, float>) {
    f16_to_f32(src, dst, n);
  } else if constexpr (is_half_v<S> && is_half_v<D>) {
    // 16-bit float to 16-bit float through an f32 staging buffer.
    float tmp[256];
    for (int64_t i = 0; i < n; i += 256) {
      const int64_t w = std::min<int64_t>(256, n - i);
      convert_chunk(src + i, tmp, w);
      convert_chunk(static_cast<const float*>(tmp), dst + i, w);
    }
  } else if constexpr (std::is_same_v<S, double> && is_half_v<D>) {
    float tmp[256];
    for (int64_t i = 0; i < n; i += 256) {
      const int64_t w = std::min<int64_t>(256, n - i);
      for (int64_t k = 0; k < w; ++k) tmp[k] = float(src[i + k]);
      convert_chunk(static_cast<const float*>(tmp), dst + i, w);
    }
  } else if constexpr (std::is_floating_point_v<S> && std::is_floating_point_v<D>) {
    for (int64_t i = 0; i < n; ++i) dst[i] = D(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = store<D>(load(src[i]));
  }
}

template <class S, class D>
void convert(const S* src, D* dst, int64_t n) {
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) { convert_chunk(src + b, dst + b, e - b); });
}

}  // namespace

void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n) {
  visit_dtype(src_dtype, [&](auto s) {
    visit_dtype(dst_dtype, [&](auto d) {
      using S = decltype(s);
      using D = decltype(d);
      convert(static_cast<const S*>(src), static_cast<D*>(dst), n);
    });
  });
}

void cast(const float* src, bf16* dst, int64_t n) { convert(src, dst, n); }
void cast(const bf16* src, float* dst, int64_t n) { convert(src, dst, n); }
void cast(const float* src, f16* dst, int64_t n) { convert(src, dst, n); }
void cast(const f16* src, float* dst, int64_t n) { convert(src, dst, n); }

}  // namespace automodel::cpu
