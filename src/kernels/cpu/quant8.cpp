#include "kernels/cpu/quant8.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

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
#include "kernels/cpu/div_by_reciprocal.h"

namespace automodel::cpu::q8 {

namespace {

float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// torch.linspace(0.1, 1, n) in fp32 as torch computes it on the CPU: step = (end - start) / (n - 1); the first
// half start + step * k, the second end - step * (n - 1 - k), each a single fused multiply-add.
std::vector<float> linspace_01_1(int n) {
  const float start = 0.1f, end = 1.0f;
  const float step = (end - start) / float(n - 1);
  std::vector<float> out(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k)
    out[size_t(k)] = k < n / 2 ? std::fma(step, float(k), start) : std::fma(-step, float(n - 1 - k), end);
  return out;
}

}  // namespace

// torchao's create_dynamic_map(signed, max_exponent_bits=7, total_bits=8): for each decade i = 0..6, the midpoints
// of linspace(0.1, 1, 2^i + 1) (signed; 2^(i+1) + 1 unsigned) times 10^(i-6), and their negatives when signed;
// then 0 and 1. torch multiplies the fp32 midpoints by the Python float 10^(i-6) in fp32.
QuantMap::QuantMap(bool is_signed) {
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    const int items = is_signed ? (1 << i) + 1 : (1 << (i + 1)) + 1;
    const std::vector<float> b = linspace_01_1(items);
    const float decade = float(std::pow(10.0, double(i - 6)));
    for (int k = 0; k + 1 < items; ++k) {
      const float mean = (b[size_t(k)] + b[size_t(k) + 1]) / 2.0f;
      data.push_back(decade * mean);
      if (is_signed) data.push_back(-decade * mean);
    }
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  AM_CHECK(data.size() == 256, "quantization map: ", data.size(), " values instead of 256");
  std::sort(data.begin(), data.end());
  std::copy(data.begin(), data.end(), values_);

  // Row 0 stands for all exponent fields up to the floor: every float of either sign up to it (zeros and
  // subnormals included) has one code, no split.
  const uint32_t smallest[2] = {bucket(0), bucket(1u << 15)};
  auto uniform = [&](uint32_t e) {
    for (uint32_t sign = 0; sign < 2; ++sign)
      for (uint32_t m = 0; m < 128; ++m)
        if (bucket((sign << 15) | (e << 7) | m) != smallest[sign]) return false;
    return true;
  };
  AM_CHECK(uniform(0), "quantization map: the smallest floats take more than one code");
  uint32_t floor = 0;
  while (floor + 1 < 127 && uniform(floor + 1)) ++floor;
  // quantize_unit's quotients of |x| < 2^-100 may miss by some ulps (div_by_reciprocal): all land below 2^-60.
  AM_CHECK(floor >= 127 - 60, "quantization map: the floats below 2^-60 take more than one code");
  exponent_floor_ = int(floor);
  rows_ = 128 - floor;  // row r > 0: exponent field floor + r, up to 127 (|x| in [1, 2) holds only 1 itself)
  buckets_.resize(size_t(2 * rows_ * 128));
  for (uint32_t sign = 0; sign < 2; ++sign)
    for (uint32_t row = 0; row < rows_; ++row)
      for (uint32_t m = 0; m < 128; ++m)
        buckets_[((sign * rows_ + row) << 7) | m] = bucket((sign << 15) | ((floor + row) << 7) | (row ? m : 0));
}

// Codes are monotone in a float's value, so they are monotone in the low half inside a bucket (rising for positive
// floats, falling for negative ones): two codes at most means one split.
uint32_t QuantMap::bucket(uint32_t key) const {  // finite floats only: the table spans |x| <= 1
  const uint32_t low = quantize_reference(float_of(key << 16));
  const uint32_t high = quantize_reference(float_of((key << 16) | 0xffffu));
  uint32_t split = 0;
  if (low != high) {
    AM_CHECK(std::abs(int(high) - int(low)) == 1, "quantization map: three codes among the floats with high half ", key,
             " (the table quantizer needs at most two)");
    uint32_t lo = 0, hi = 0xffffu;  // code(lo) == low, code(hi) == high
    while (hi - lo > 1) {
      const uint32_t mid = (lo + hi) / 2;
      (quantize_reference(float_of((key << 16) | mid)) == low ? lo : hi) = mid;
    }
    split = hi;
  }
  return low | (high << 8) | (split << 16);
}

// torchao's quantize_8bit_with_qmap: a branch-free binary search for the largest code whose value is <= x, then
// rounding up when x lies at least half-way to the next value.
uint8_t QuantMap::quantize_reference(float x) const {
  int c = x >= values_[128] ? 128 : 0;
  for (int step = 64; step >= 1; step /= 2) c += x >= values_[c + step] ? step : 0;
  const int up = std::min(c + 1, 255);
  const float down = values_[c];
  if (x - down >= (values_[up] - down) * 0.5f) c = up;
  return uint8_t(c);
}

// The table's fields in locals: the byte stores may alias anything, so members would be reloaded every element and
// the loop would not vectorize.
void QuantMap::quantize_unit(const float* x, float scale, int64_t n, uint8_t* codes) const {
  const uint32_t* table = buckets_.data();
  const int floor = exponent_floor_;
  const uint32_t rows = rows_;
#if defined(__AVX512F__)
  // Compilers leave the table lookup scalar; here it is one gather per 16 elements.
  const __m512 vscale = _mm512_set1_ps(scale), vrecip = _mm512_set1_ps(1.0f / scale);
  // A float's row and 7 high mantissa bits are its high half less the sign, counted from the floor exponent's row:
  // row 0 holds one entry 128 times, so that everything below clamps to it.
  const __m512i vfloor = _mm512_set1_epi32(floor << 7), vrows = _mm512_set1_epi32(int(rows << 7));
  const __m512i low15 = _mm512_set1_epi32(0x7fff), low16 = _mm512_set1_epi32(0xffff);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 live = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1u);
    const __m512 xi = _mm512_maskz_loadu_ps(live, x + i), q = _mm512_mul_ps(xi, vrecip);
    const __m512i u = _mm512_castps_si512(_mm512_fmadd_ps(_mm512_fnmadd_ps(q, vscale, xi), vrecip, q));
    const __m512i at = _mm512_max_epi32(_mm512_sub_epi32(_mm512_and_si512(_mm512_srli_epi32(u, 16), low15), vfloor),
                                        _mm512_setzero_si512());
    const __m512i idx = _mm512_mask_add_epi32(at, _mm512_cmplt_epi32_mask(u, _mm512_setzero_si512()), at, vrows);
    const __m512i b = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, idx, table, 4);
    const __mmask16 upper = _mm512_cmpge_epu32_mask(_mm512_and_si512(u, low16), _mm512_srli_epi32(b, 16));
    const __m512i code = _mm512_mask_blend_epi32(upper, b, _mm512_srli_epi32(b, 8));
    _mm512_mask_cvtepi32_storeu_epi8(codes + i, live, code);
  }
#else
  const float recip = 1.0f / scale;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float q = div_by_reciprocal(x[i], scale, recip);
    uint32_t u;
    std::memcpy(&u, &q, 4);
    const int at = std::max(int((u >> 16) & 0x7fffu) - (floor << 7), 0);
    const uint32_t b = table[uint32_t(at) + (u >> 31) * (rows << 7)];
    codes[i] = uint8_t((u & 0xffffu) >= (b >> 16) ? b >> 8 : b);
  }
#endif
}

const QuantMap& signed_map() {
  static const QuantMap m(true);
  return m;
}

const QuantMap& unsigned_map() {
  static const QuantMap m(false);
  return m;
}

float block_scale(float amax, bool nan) {
  return nan ? std::numeric_limits<float>::quiet_NaN() : std::max(amax, 1e-12f);
}

void quantize_scaled(const QuantMap& map, const float* x, int64_t n, float scale, uint8_t* codes) {
  if (scale <= 0x1p125f) {
    map.quantize_unit(x, scale, n, codes);
  } else {  // a NaN or an infinity in the block (quotients outside [-1, 1]), or 1 / scale not normal
    for (int64_t i = 0; i < n; ++i) codes[i] = map.quantize_reference(x[i] / scale);
  }
}

float quantize_block(const QuantMap& map, const float* x, int64_t n, uint8_t* codes) {
  float amax = 0.0f;
  int nan = 0;
#if defined(__AVX512F__)
  // GCC turns the NaN flag of the loop below into a store per element.
  __m512 vmax = _mm512_setzero_ps();
  __mmask16 unordered = 0;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 live = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1u);
    const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(live, x + i));
    vmax = _mm512_max_ps(vmax, a);  // a NaN may drop out of the maximum; the flag keeps it
    unordered |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
  }
  amax = _mm512_reduce_max_ps(vmax);
  nan = unordered != 0;
#else
#pragma omp simd reduction(max : amax) reduction(| : nan)
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    amax = std::max(amax, a);
    nan |= a != a;
  }
#endif
  const float scale = block_scale(amax, nan != 0);
  quantize_scaled(map, x, n, scale, codes);
  return scale;
}

void dequantize_block(const QuantMap& map, const uint8_t* codes, float scale, int64_t n, float* x) {
  const float* v = map.values();
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 vscale = _mm512_set1_ps(scale);
  for (; i + 16 <= n; i += 16) {
    const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i)));
    _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_i32gather_ps(c, v, 4), vscale));
  }
#endif
  for (; i < n; ++i) x[i] = v[codes[i]] * scale;
}

}  // namespace automodel::cpu::q8
