#include "kernels/cpu/attention_bf16.h"

#if defined(__AVX512BF16__)

// GCC 12 reports its own AVX-512 intrinsics (their _mm512_undefined_* operands) as maybe-uninitialized.
#pragma GCC diagnostic push
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/arith.h"
#include "kernels/cpu/amx.h"
#include "kernels/cpu/attention_mask.h"
#include "kernels/cpu/scratch.h"

namespace automodel::cpu::detail {

namespace {

// Queries and keys per tile. Every tile product is C[M, N] += A[M, 2P] B[2P, N] over P pairs of
// the reduction index: A holds, per row, P dwords of two bf16 (consecutive reduction indices); B is
// in the VNNI layout vdpbf16ps wants, row p holding for every column the pair (2p, 2p + 1).
constexpr int64_t kTile = 64;
constexpr int64_t kPairs = kTile / 2;
constexpr int kRows = 4;  // micro-kernel rows; tile row counts are multiples of it

inline uint32_t pack(uint16_t lo, uint16_t hi) { return uint32_t(lo) | uint32_t(hi) << 16; }

template <int NV, bool Acc>
inline void dp_kernel(int64_t P, const uint32_t* a, int64_t lda, const uint32_t* b, int64_t ldb, float* c,
                      int64_t ldc) {
  __m512 acc[kRows][NV];
#pragma GCC unroll 4
  for (int i = 0; i < kRows; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = Acc ? _mm512_loadu_ps(c + i * ldc + 16 * v) : _mm512_setzero_ps();
  for (int64_t p = 0; p < P; ++p) {
    __m512bh bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + p * ldb + 16 * v);
#pragma GCC unroll 4
    for (int i = 0; i < kRows; ++i) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(int(a[i * lda + p]));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], av, bv[v]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < kRows; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(c + i * ldc + 16 * v, acc[i][v]);
}

// C[M, N] (+)= A . B as above on AVX512-BF16; M % kRows == 0, N % 16 == 0.
template <bool Acc>
void dp_gemm_vec(int64_t M, int64_t N, int64_t P, const uint32_t* a, int64_t lda, const uint32_t* b, int64_t ldb,
                 float* c, int64_t ldc) {
  for (int64_t n0 = 0; n0 < N; n0 += 64) {
    const int64_t nv = std::min<int64_t>(4, (N - n0) / 16);
    for (int64_t m0 = 0; m0 < M; m0 += kRows) {
      const uint32_t* am = a + m0 * lda;
      float* cm = c + m0 * ldc + n0;
      switch (nv) {
        case 4: dp_kernel<4, Acc>(P, am, lda, b + n0, ldb, cm, ldc); break;
        case 3: dp_kernel<3, Acc>(P, am, lda, b + n0, ldb, cm, ldc); break;
        case 2: dp_kernel<2, Acc>(P, am, lda, b + n0, ldb, cm, ldc); break;
        default: dp_kernel<1, Acc>(P, am, lda, b + n0, ldb, cm, ldc); break;
      }
    }
  }
}

#if defined(__AMX_BF16__) && defined(__AMX_TILE__)
constexpr bool kAmxBuild = true;

// The tile layouts are the ones above: an A tile is 16 rows of 16 pairs, a B tile 16 pairs of 16
// columns (VNNI), a C tile 16 x 16 floats. Registers: C 0-3 (a 32 x 32 block), A 4-5, B 6-7, all
// 16 rows of 64 bytes. The configuration is per thread: every parallel region that runs tile
// products loads it first (oneDNN's kernels, on the same threads, load their own).
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

void amx_configure() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
}
void amx_release() { _tile_release(); }

// One (16 MB) x (16 NB) block of C over P16 pairs (a multiple of 16).
template <int MB, int NB, bool Acc>
void amx_block(int64_t P16, const uint32_t* a, int64_t lda, const uint32_t* b, int64_t ldb, float* c, int64_t ldc) {
  const int64_t sa = lda * 4, sb = ldb * 4, sc = ldc * 4;
  float* c1 = c + 16 * ldc;
  if constexpr (Acc) {
    _tile_loadd(0, c, sc);
    if constexpr (NB > 1) _tile_loadd(1, c + 16, sc);
    if constexpr (MB > 1) _tile_loadd(2, c1, sc);
    if constexpr (MB > 1 && NB > 1) _tile_loadd(3, c1 + 16, sc);
  } else {
    _tile_zero(0);
    if constexpr (NB > 1) _tile_zero(1);
    if constexpr (MB > 1) _tile_zero(2);
    if constexpr (MB > 1 && NB > 1) _tile_zero(3);
  }
  for (int64_t p = 0; p < P16; p += 16) {
    _tile_loadd(4, a + p, sa);
    _tile_loadd(6, b + p * ldb, sb);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (NB > 1) {
      _tile_loadd(7, b + p * ldb + 16, sb);
      _tile_dpbf16ps(1, 4, 7);
    }
    if constexpr (MB > 1) {
      _tile_loadd(5, a + 16 * lda + p, sa);
      _tile_dpbf16ps(2, 5, 6);
      if constexpr (NB > 1) _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, c, sc);
  if constexpr (NB > 1) _tile_stored(1, c + 16, sc);
  if constexpr (MB > 1) _tile_stored(2, c1, sc);
  if constexpr (MB > 1 && NB > 1) _tile_stored(3, c1 + 16, sc);
}

// Whole 16-row blocks and 16-pair steps on the tiles; leftover rows and pairs on AVX512-BF16.
template <bool Acc>
void amx_gemm(int64_t M, int64_t N, int64_t P, const uint32_t* a, int64_t lda, const uint32_t* b, int64_t ldb, float* c,
              int64_t ldc) {
  const int64_t M16 = M / 16 * 16, P16 = P / 16 * 16;
  for (int64_t n0 = 0; n0 < N; n0 += 32) {
    const bool two_n = N - n0 >= 32;
    for (int64_t m0 = 0; m0 < M16; m0 += 32) {
      const uint32_t* am = a + m0 * lda;
      float* cm = c + m0 * ldc + n0;
      if (M16 - m0 >= 32)
        two_n ? amx_block<2, 2, Acc>(P16, am, lda, b + n0, ldb, cm, ldc)
              : amx_block<2, 1, Acc>(P16, am, lda, b + n0, ldb, cm, ldc);
      else
        two_n ? amx_block<1, 2, Acc>(P16, am, lda, b + n0, ldb, cm, ldc)
              : amx_block<1, 1, Acc>(P16, am, lda, b + n0, ldb, cm, ldc);
    }
  }
  if (P16 < P) dp_gemm_vec<true>(M16, N, P - P16, a + P16, lda, b + P16 * ldb, ldb, c, ldc);
  if (M16 < M) dp_gemm_vec<Acc>(M - M16, N, P, a + M16 * lda, lda, b, ldb, c + M16 * ldc, ldc);
}
#else
constexpr bool kAmxBuild = false;
void amx_configure() {}
void amx_release() {}
template <bool Acc>
void amx_gemm(int64_t, int64_t, int64_t, const uint32_t*, int64_t, const uint32_t*, int64_t, float*, int64_t) {}
#endif

// C[M, N] (+)= A . B; on the tiles when `amx` (the calling region has configured them) and a
// whole tile of rows and pairs exists.
template <bool Acc>
void dp_gemm(bool amx, int64_t M, int64_t N, int64_t P, const uint32_t* a, int64_t lda, const uint32_t* b, int64_t ldb,
             float* c, int64_t ldc) {
  if (kAmxBuild && amx && M >= 16 && P >= 16) return amx_gemm<Acc>(M, N, P, a, lda, b, ldb, c, ldc);
  dp_gemm_vec<Acc>(M, N, P, a, lda, b, ldb, c, ldc);
}

// Tile state for one parallel region's thread: configured on entry when AMX is on, released on exit.
struct AmxScope {
  const bool on;
  explicit AmxScope(bool amx) : on(amx) {
    if (on) amx_configure();
  }
  ~AmxScope() {
    if (on) amx_release();
  }
  AmxScope(const AmxScope&) = delete;
  AmxScope& operator=(const AmxScope&) = delete;
};

// exp over 16 lanes (Cephes' reduction and polynomial, as exp_fast in fast_math.h); 0 below
// ln(FLT_MIN), so -inf gives 0.
inline __m512 exp16(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.33654f);
  const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(88.72283f));
  const __m512 n =
      _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_maskz_mov_ps(_knot_mask16(under), _mm512_scalef_ps(p, n));
}

// tanh over 16 lanes: 1 - 2 / (exp(2x) + 1) (saturates to +-1 through exp16's clamp).
inline __m512 tanh16(__m512 x) {
  const __m512 e = exp16(_mm512_add_ps(x, x));
  return _mm512_sub_ps(_mm512_set1_ps(1.0f), _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1))));
}

// A row of kTile floats as kTile bf16 (round to nearest even): kPairs dwords of consecutive pairs.
inline void row_to_pairs(const float* x, uint32_t* out) {
  for (int64_t c = 0; c < kTile; c += 32) {
    const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + c + 16), _mm512_loadu_ps(x + c));
    _mm512_storeu_si512(out + c / 2, (__m512i)h);
  }
}

// Rows 2p and 2p + 1 of a [kTile, kTile] float tile, interleaved as bf16 pairs (VNNI row p).
inline void rows_to_vnni(const float* x, uint32_t* out) {
  const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21,
                                       5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int64_t p = 0; p < kPairs; ++p) {
    const float* r0 = x + 2 * p * kTile;
    const float* r1 = r0 + kTile;
    for (int64_t c = 0; c < kTile; c += 16) {
      const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(r1 + c), _mm512_loadu_ps(r0 + c));
      _mm512_storeu_si512(out + p * kTile + c, _mm512_permutexvar_epi16(idx, (__m512i)h));
    }
  }
}

// The sizes of one call and its mask (attention_mask.h).
struct Geometry : AttentionMask {
  int64_t B, Hq, Hkv, D, Dv, G;
  int64_t Tqp, Tkp;   // lengths padded to whole tiles
  int64_t Dh, Dvh;    // pairs along a row of q / k (D) and of v / dout (Dv)
  int64_t D4, Dv4;    // D, Dv as micro-kernel row counts
  int64_t D16, Dv16;  // D, Dv as vector-width column counts
  float scale, cap;

  explicit Geometry(const AttentionShape& s)
      : AttentionMask(s),
        B(s.batch),
        Hq(s.q_heads),
        Hkv(s.kv_heads),
        D(s.head_dim),
        Dv(s.v_head_dim),
        G(s.kv_heads > 0 ? s.q_heads / s.kv_heads : 1),
        Tqp(round_up(s.q_len, kTile)),
        Tkp(round_up(s.kv_len, kTile)),
        Dh((s.head_dim + 1) / 2),
        Dvh((s.v_head_dim + 1) / 2),
        D4(round_up(s.head_dim, kRows)),
        Dv4(round_up(s.v_head_dim, kRows)),
        D16(round_up(s.head_dim, 16)),
        Dv16(round_up(s.v_head_dim, 16)),
        scale(float(s.scale)),
        cap(float(s.softcap)) {}

  // key_range with its start aligned down to a whole key tile (the k / v layouts are padded to whole tiles).
  void key_tiles(int64_t b, int64_t i0, int64_t nq, int64_t& lo, int64_t& hi) const {
    key_range(b, i0, nq, lo, hi);
    lo = lo / kTile * kTile;
  }
  // query_range with its start aligned down to a whole query tile.
  void query_tiles(int64_t b, int64_t j0, int64_t nk, int64_t& lo, int64_t& hi) const {
    query_range(b, j0, nk, lo, hi);
    lo = lo / kTile * kTile;
  }

  // S[r, c] for queries i0 + r (r < kTile) and keys j0 + c: scale, soft cap (dcap = 1 - tanh^2
  // when not null), then -inf where a real query may not see the key (and for keys past Tk).
  void finish_scores(int64_t b, int64_t i0, int64_t nq, int64_t j0, int64_t nk, float* S, float* dcap) const {
    const __m512 vs = _mm512_set1_ps(scale);
    for (int64_t x = 0; x < kTile * kTile; x += 16) {
      __m512 s = _mm512_mul_ps(_mm512_loadu_ps(S + x), vs);
      if (cap > 0) {
        const __m512 t = tanh16(_mm512_mul_ps(s, _mm512_set1_ps(1.0f / cap)));
        s = _mm512_mul_ps(t, _mm512_set1_ps(cap));
        if (dcap) _mm512_storeu_ps(dcap + x, _mm512_fnmadd_ps(t, t, _mm512_set1_ps(1.0f)));
      }
      _mm512_storeu_ps(S + x, s);
    }
    if (nk == kTile && !tile_needs_mask(i0, nq, j0, nk)) return;
    // Keys of the tile that share the query's sequence id, as 16-lane masks (all set without ids).
    __mmask16 same_id[kTile / 16] = {0xffff, 0xffff, 0xffff, 0xffff};
    int64_t kid[kTile];
    if (ids)
      for (int64_t c = 0; c < kTile; ++c) kid[c] = j0 + c < Tk ? ids[b * Tk + j0 + c] : -1;
    const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int64_t r = 0; r < nq; ++r) {
      const int64_t qp = i0 + r + off;
      int64_t lo, hi;
      row_keys(b, qp, j0, nk, lo, hi);
      if (ids) {
        const __m512i id = _mm512_set1_epi64(ids[b * Tk + qp]);
        for (int64_t v = 0; v < kTile / 16; ++v) {
          const __mmask8 a = _mm512_cmpeq_epi64_mask(_mm512_loadu_si512(kid + 16 * v), id);
          const __mmask8 c = _mm512_cmpeq_epi64_mask(_mm512_loadu_si512(kid + 16 * v + 8), id);
          same_id[v] = _mm512_kunpackb(c, a);
        }
      }
      float* s = S + r * kTile;
      for (int64_t v = 0; v < kTile / 16; ++v) {
        const __m512i c = _mm512_add_epi32(lane, _mm512_set1_epi32(int(16 * v)));
        const __mmask16 ok = _mm512_cmpge_epi32_mask(c, _mm512_set1_epi32(int(lo))) &
                             _mm512_cmplt_epi32_mask(c, _mm512_set1_epi32(int(hi))) & same_id[v];
        _mm512_storeu_ps(s + 16 * v, _mm512_mask_mov_ps(neg_inf, ok, _mm512_loadu_ps(s + 16 * v)));
      }
    }
  }
};

// Element (t, d) of head h of x [B, T, H, W] as bf16 bits.
struct HeadRows {
  const uint16_t* base;
  int64_t stride;  // H * W
  uint16_t at(int64_t t, int64_t d) const { return base[t * stride + d]; }
};
HeadRows head_rows(const bf16* x, int64_t b, int64_t h, int64_t T, int64_t H, int64_t W) {
  return {reinterpret_cast<const uint16_t*>(x) + (b * T * H + h) * W, H * W};
}

// The layouts, for T rows of width W (padding stays zero: the buffers start zeroed). The vector
// paths gather dwords of two bf16, so they need even widths (odd ones take the scalar path).
const __m512i kLane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);

// Pairs along a row, transposed: dst[p, t] = (x[t, 2p], x[t, 2p + 1]), row length ld.
void pairs_transposed(HeadRows x, int64_t T, int64_t W, uint32_t* dst, int64_t ld) {
  int64_t t0 = 0;
  if (W % 2 == 0) {
    const __m512i rows = _mm512_mullo_epi32(kLane, _mm512_set1_epi32(int(x.stride)));
    for (; t0 + 16 <= T; t0 += 16)
      for (int64_t p = 0; p < W / 2; ++p)
        _mm512_storeu_si512(dst + p * ld + t0, _mm512_i32gather_epi32(rows, x.base + t0 * x.stride + 2 * p, 2));
  }
  for (int64_t t = t0; t < T; ++t)
    for (int64_t p = 0; 2 * p < W; ++p) dst[p * ld + t] = pack(x.at(t, 2 * p), 2 * p + 1 < W ? x.at(t, 2 * p + 1) : 0);
}
// Pairs of rows interleaved: dst[p, d] = (x[2p, d], x[2p + 1, d]), row length ld.
void row_pairs(HeadRows x, int64_t T, int64_t W, uint32_t* dst, int64_t ld) {
  for (int64_t p = 0; 2 * p < T; ++p) {
    const uint16_t* r0 = x.base + 2 * p * x.stride;
    int64_t d = 0;
    if (2 * p + 1 < T)
      for (; d + 16 <= W; d += 16) {
        const __m512i a = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + d)));
        const __m512i b =
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r0 + x.stride + d)));
        _mm512_storeu_si512(dst + p * ld + d, _mm512_or_si512(a, _mm512_slli_epi32(b, 16)));
      }
    for (; d < W; ++d) dst[p * ld + d] = pack(x.at(2 * p, d), 2 * p + 1 < T ? x.at(2 * p + 1, d) : 0);
  }
}
// Pairs of rows, transposed: dst[d, p] = (x[2p, d], x[2p + 1, d]), row length ld.
void row_pairs_transposed(HeadRows x, int64_t T, int64_t W, uint32_t* dst, int64_t ld) {
  int64_t p0 = 0;
  if (W % 2 == 0) {
    const __m512i rows = _mm512_mullo_epi32(kLane, _mm512_set1_epi32(int(2 * x.stride)));
    const __m512i lo16 = _mm512_set1_epi32(0xffff);
    for (; 2 * (p0 + 16) <= T; p0 += 16) {
      const uint16_t* base = x.base + 2 * p0 * x.stride;
      for (int64_t d = 0; d < W; d += 2) {
        const __m512i g0 = _mm512_i32gather_epi32(rows, base + d, 2);  // (x[2p, d], x[2p, d + 1])
        const __m512i g1 = _mm512_i32gather_epi32(rows, base + x.stride + d, 2);
        _mm512_storeu_si512(dst + d * ld + p0, _mm512_or_si512(_mm512_and_si512(g0, lo16), _mm512_slli_epi32(g1, 16)));
        _mm512_storeu_si512(dst + (d + 1) * ld + p0,
                            _mm512_or_si512(_mm512_srli_epi32(g0, 16), _mm512_andnot_si512(lo16, g1)));
      }
    }
  }
  for (int64_t p = p0; 2 * p < T; ++p)
    for (int64_t d = 0; d < W; ++d) dst[d * ld + p] = pack(x.at(2 * p, d), 2 * p + 1 < T ? x.at(2 * p + 1, d) : 0);
}
// Stores n floats times `mult` as bf16.
inline void store_bf16(const float* src, float mult, int64_t n, bf16* dst) {
  const __m512 vm = _mm512_set1_ps(mult);
  int64_t d = 0;
  for (; d + 16 <= n; d += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + d),
                        (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(src + d), vm)));
  for (; d < n; ++d) dst[d] = float_to_bf16(src[d] * mult);
}
// Rows t0 .. t0 + n of x as dwords of pairs along the row (row length ld), zero rows up to kTile.
void tile_rows(HeadRows x, int64_t t0, int64_t n, int64_t W, uint32_t* dst, int64_t ld) {
  std::fill(dst, dst + kTile * ld, 0u);
  for (int64_t r = 0; r < n; ++r) {
    std::memcpy(dst + r * ld, x.base + (t0 + r) * x.stride, size_t(W) * 2);
  }
}

// One layout per (batch, head), built in parallel: buf[(b * H + h) * size ...].
template <class F>
void per_head(int64_t B, int64_t H, bool parallel, F&& build) {
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t bh = 0; bh < B * H; ++bh) build(bh / H, bh % H);
}

// Below this many multiply-adds a call runs on one thread.
constexpr double kParallelWork = 1 << 18;

}  // namespace

bool dpbf16_attention_serves(const AttentionShape& s) { return s.q_len >= kTile / 4; }

// Forward: one task per (batch, query head, query tile), later tiles first (under a causal mask
// they see the most keys). S = Q K^T against k pairs transposed; the online softmax runs along
// S's rows; O += P V against v row pairs.
void attention_forward_dpbf16(const AttentionShape& shape, const bf16* q, const bf16* k, const bf16* v, bf16* out,
                              float* lse) {
  const Geometry g(shape);
  if (g.B == 0 || g.Tq == 0 || g.Hq == 0) return;
  const bool parallel = double(g.B * g.Hq) * double(g.Tq) * double(g.Tk) * double(g.D + g.Dv) > kParallelWork;
  const bool amx = amx_bf16_enabled();
  const int64_t kd_size = g.Dh * g.Tkp, vp_size = g.Tkp / 2 * g.Dv16;
  Scratch<uint32_t> kd(g.B * g.Hkv * kd_size), vp(g.B * g.Hkv * vp_size);
  per_head(g.B, g.Hkv, parallel, [&](int64_t b, int64_t h) {
    pairs_transposed(head_rows(k, b, h, g.Tk, g.Hkv, g.D), g.Tk, g.D, kd.data() + (b * g.Hkv + h) * kd_size, g.Tkp);
    row_pairs(head_rows(v, b, h, g.Tk, g.Hkv, g.Dv), g.Tk, g.Dv, vp.data() + (b * g.Hkv + h) * vp_size, g.Dv16);
  });

  const int64_t qtiles = g.Tqp / kTile, ntasks = g.B * g.Hq * qtiles;
  const float inf = std::numeric_limits<float>::infinity();
#pragma omp parallel if (parallel)
  {
    const AmxScope tiles(amx);
    Scratch<float> fw(kTile * kTile + kTile * g.Dv16 + 2 * kTile);
    Scratch<uint32_t> uw(kTile * g.Dh + kTile * kPairs);
    float* S = fw.take(kTile * kTile);
    float* O = fw.take(kTile * g.Dv16);
    float* m = fw.take(kTile);
    float* l = fw.take(kTile);
    uint32_t* qt = uw.take(kTile * g.Dh);
    uint32_t* pb = uw.take(kTile * kPairs);

#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < ntasks; ++task) {
      const int64_t bh = task % (g.B * g.Hq), b = bh / g.Hq, h = bh % g.Hq, hk = h / g.G;
      const int64_t i0 = (qtiles - 1 - task / (g.B * g.Hq)) * kTile, nq = std::min(kTile, g.Tq - i0);
      const int64_t mr = round_up(nq, kRows);
      const uint32_t* kdh = kd.data() + (b * g.Hkv + hk) * kd_size;
      const uint32_t* vph = vp.data() + (b * g.Hkv + hk) * vp_size;
      tile_rows(head_rows(q, b, h, g.Tq, g.Hq, g.D), i0, nq, g.D, qt, g.Dh);
      std::fill(O, O + kTile * g.Dv16, 0.0f);
      // A sink starts each row's softmax as a key of score `sink` whose value is zero.
      const float* sinks = static_cast<const float*>(shape.sinks);
      std::fill(m, m + kTile, sinks ? sinks[h] : -inf);
      std::fill(l, l + kTile, sinks ? 1.0f : 0.0f);
      int64_t klo, khi;
      g.key_tiles(b, i0, nq, klo, khi);
      for (int64_t j0 = klo; j0 < khi; j0 += kTile) {
        const int64_t nk = std::min(kTile, g.Tk - j0);
        if (!g.ids_overlap(b, i0, nq, j0, std::min(nk, khi - j0))) continue;
        dp_gemm<false>(amx, mr, kTile, g.Dh, qt, g.Dh, kdh + j0, g.Tkp, S, kTile);
        g.finish_scores(b, i0, nq, j0, nk, S, nullptr);
        for (int64_t r = 0; r < mr; ++r) {
          float* s = S + r * kTile;
          __m512 mx = _mm512_loadu_ps(s);
          for (int64_t c = 16; c < kTile; c += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + c));
          const float m_new = std::max(m[r], _mm512_reduce_max_ps(mx));
          const float base = m_new == -inf ? 0.0f : m_new;
          const float alpha = m[r] == -inf ? 0.0f : std::exp(m[r] - base);
          const __m512 vb = _mm512_set1_ps(base);
          __m512 sum = _mm512_setzero_ps();
          for (int64_t c = 0; c < kTile; c += 16) {
            const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(s + c), vb));
            _mm512_storeu_ps(s + c, e);
            sum = _mm512_add_ps(sum, e);
          }
          m[r] = m_new;
          l[r] = l[r] * alpha + _mm512_reduce_add_ps(sum);
          if (alpha != 1.0f) {
            float* o = O + r * g.Dv16;
            const __m512 va = _mm512_set1_ps(alpha);
            for (int64_t d = 0; d < g.Dv16; d += 16) _mm512_storeu_ps(o + d, _mm512_mul_ps(_mm512_loadu_ps(o + d), va));
          }
          row_to_pairs(s, pb + r * kPairs);
        }
        dp_gemm<true>(amx, mr, g.Dv16, kPairs, pb, kPairs, vph + j0 / 2 * g.Dv16, g.Dv16, O, g.Dv16);  // O += P V
      }
      for (int64_t r = 0; r < nq; ++r) {
        bf16* dst = out + ((b * g.Tq + i0 + r) * g.Hq + h) * g.Dv;
        store_bf16(O + r * g.Dv16, l[r] > 0 ? 1.0f / l[r] : 0.0f, g.Dv, dst);
        lse[(b * g.Hq + h) * g.Tq + i0 + r] = l[r] > 0 ? m[r] + std::log(l[r]) : inf;
      }
    }
  }
}

// Backward, one pass: one task per (batch, kv head, key tile), early key tiles first, looping over
// the group's query heads and the query tiles that see the key tile. Per tile, with P = exp(S - lse)
// recomputed, dP = dO V^T and dS = P * (dP - delta) (* (1 - tanh^2) when soft-capped):
// dV^T += dO^T P, dK^T += Q^T dS (times scale) in the task's accumulators, and dQ += dS K (times
// scale) into the running thread's own dQ buffer; the buffers are summed at the end.

namespace {

// delta[(b * Hq + h) * Tq + i] = sum_d dout * out of query row i of head h.
void row_deltas(const Geometry& g, const bf16* out, const bf16* dout, bool parallel, float* delta) {
  const int64_t rows = g.B * g.Tq * g.Hq;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t b = row / (g.Tq * g.Hq), i = (row / g.Hq) % g.Tq, h = row % g.Hq;
    float acc = 0;
    for (int64_t d = 0; d < g.Dv; ++d) acc += bf16_to_float(out[row * g.Dv + d]) * bf16_to_float(dout[row * g.Dv + d]);
    delta[(b * g.Hq + h) * g.Tq + i] = acc;
  }
}

// The operands as the tile products read them, built once per call: per kv head k and v pairs transposed (kd, vd)
// and k row pairs (kp); per query head q and dout row pairs transposed (qtr, dotr).
struct BackwardOperands {
  int64_t kd_size, vd_size, kp_size, qt_size, dot_size;
  Scratch<uint32_t> kd, vd, kp, qtr, dotr;

  BackwardOperands(const Geometry& g, const bf16* q, const bf16* k, const bf16* v, const bf16* dout, bool parallel)
      : kd_size(g.Dh * g.Tkp),
        vd_size(g.Dvh * g.Tkp),
        kp_size(g.Tkp / 2 * g.D16),
        qt_size(g.D4 * (g.Tqp / 2)),
        dot_size(g.Dv4 * (g.Tqp / 2)),
        kd(g.B * g.Hkv * kd_size),
        vd(g.B * g.Hkv * vd_size),
        kp(g.B * g.Hkv * kp_size),
        qtr(g.B * g.Hq * qt_size),
        dotr(g.B * g.Hq * dot_size) {
    per_head(g.B, g.Hkv, parallel, [&](int64_t b, int64_t h) {
      const int64_t bh = b * g.Hkv + h;
      const HeadRows kr = head_rows(k, b, h, g.Tk, g.Hkv, g.D), vr = head_rows(v, b, h, g.Tk, g.Hkv, g.Dv);
      pairs_transposed(kr, g.Tk, g.D, kd.data() + bh * kd_size, g.Tkp);
      pairs_transposed(vr, g.Tk, g.Dv, vd.data() + bh * vd_size, g.Tkp);
      row_pairs(kr, g.Tk, g.D, kp.data() + bh * kp_size, g.D16);
    });
    per_head(g.B, g.Hq, parallel, [&](int64_t b, int64_t h) {
      const int64_t bh = b * g.Hq + h;
      row_pairs_transposed(head_rows(q, b, h, g.Tq, g.Hq, g.D), g.Tq, g.D, qtr.data() + bh * qt_size, g.Tqp / 2);
      row_pairs_transposed(head_rows(dout, b, h, g.Tq, g.Hq, g.Dv), g.Tq, g.Dv, dotr.data() + bh * dot_size, g.Tqp / 2);
    });
  }
};

// One thread's tiles.
struct BackwardTiles {
  Scratch<float> fw;
  Scratch<uint32_t> uw;
  float *S, *dS, *dcap, *dKt, *dVt, *lse_rows, *delta_rows, *row;
  uint32_t *qt, *dot, *pv, *dsv, *dsb;
  float* dq;  // this thread's dQ accumulator (null: dQ not wanted)

  BackwardTiles(const Geometry& g, float* dq_acc)
      : fw(3 * kTile * kTile + g.D16 * kTile + g.Dv16 * kTile + 2 * kTile + std::max(g.D16, g.Dv16)),
        uw(kTile * g.Dh + kTile * g.Dvh + 3 * kTile * kPairs),
        S(fw.take(kTile * kTile)),
        dS(fw.take(kTile * kTile)),
        dcap(fw.take(kTile * kTile)),
        dKt(fw.take(g.D16 * kTile)),  // rows past D4 stay zero: store_dkdv's gathers read them
        dVt(fw.take(g.Dv16 * kTile)),
        lse_rows(fw.take(kTile)),
        delta_rows(fw.take(kTile)),
        row(fw.take(std::max(g.D16, g.Dv16))),
        qt(uw.take(kTile * g.Dh)),
        dot(uw.take(kTile * g.Dvh)),
        pv(uw.take(kTile * kPairs)),
        dsv(uw.take(kTile * kPairs)),
        dsb(uw.take(kTile * kPairs)),
        dq(dq_acc) {}
};

// Rows r < mr of S (the scores) become P = exp(S - lse) and of dS (dP) become P * (dP - delta) (* dcap); the
// padding rows of both become zero. With `pairs`, dS's rows are also packed as bf16 pairs into dsb.
void probabilities_and_score_grads(const Geometry& g, int64_t mr, BackwardTiles& t, bool pairs) {
  for (int64_t r = 0; r < kTile; ++r) {
    float* p = t.S + r * kTile;
    float* ds = t.dS + r * kTile;
    if (r >= mr) {  // padding rows: P = dS = 0
      std::fill(p, p + kTile, 0.0f);
      std::fill(ds, ds + kTile, 0.0f);
      continue;
    }
    const __m512 vl = _mm512_set1_ps(t.lse_rows[r]), vd0 = _mm512_set1_ps(t.delta_rows[r]);
    for (int64_t c = 0; c < kTile; c += 16) {
      const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p + c), vl));
      __m512 x = _mm512_mul_ps(e, _mm512_sub_ps(_mm512_loadu_ps(ds + c), vd0));
      if (g.cap > 0) x = _mm512_mul_ps(x, _mm512_loadu_ps(t.dcap + r * kTile + c));
      _mm512_storeu_ps(p + c, e);
      _mm512_storeu_ps(ds + c, x);
    }
    if (pairs) row_to_pairs(ds, t.dsb + r * kPairs);
  }
}

// The products of query tile i0 of head h (batch b) with key tile j0 of kv head kv = b * Hkv + h / G: dV^T and dK^T
// into the task's accumulators, dQ into the thread's.
void backward_tile(const Geometry& g, const BackwardOperands& ops, bool amx, const bf16* q, const bf16* dout,
                   const float* lse, const float* delta, int64_t b, int64_t h, int64_t kv, int64_t i0, int64_t j0,
                   int64_t nk, BackwardTiles& t) {
  const int64_t bh = b * g.Hq + h;
  const int64_t nq = std::min(kTile, g.Tq - i0), mr = round_up(nq, kRows);
  for (int64_t r = 0; r < kTile; ++r) {
    t.lse_rows[r] = r < nq ? lse[bh * g.Tq + i0 + r] : std::numeric_limits<float>::infinity();
    t.delta_rows[r] = r < nq ? delta[bh * g.Tq + i0 + r] : 0.0f;
  }
  tile_rows(head_rows(q, b, h, g.Tq, g.Hq, g.D), i0, nq, g.D, t.qt, g.Dh);
  tile_rows(head_rows(dout, b, h, g.Tq, g.Hq, g.Dv), i0, nq, g.Dv, t.dot, g.Dvh);
  dp_gemm<false>(amx, mr, kTile, g.Dh, t.qt, g.Dh, ops.kd.data() + kv * ops.kd_size + j0, g.Tkp, t.S, kTile);
  g.finish_scores(b, i0, nq, j0, nk, t.S, g.cap > 0 ? t.dcap : nullptr);
  dp_gemm<false>(amx, mr, kTile, g.Dvh, t.dot, g.Dvh, ops.vd.data() + kv * ops.vd_size + j0, g.Tkp, t.dS,
                 kTile);  // dP
  probabilities_and_score_grads(g, mr, t, t.dq != nullptr);
  rows_to_vnni(t.S, t.pv);
  rows_to_vnni(t.dS, t.dsv);
  const int64_t qp0 = i0 / 2;
  dp_gemm<true>(amx, g.Dv4, kTile, kPairs, ops.dotr.data() + bh * ops.dot_size + qp0, g.Tqp / 2, t.pv, kTile, t.dVt,
                kTile);  // dV^T += dO^T P
  dp_gemm<true>(amx, g.D4, kTile, kPairs, ops.qtr.data() + bh * ops.qt_size + qp0, g.Tqp / 2, t.dsv, kTile, t.dKt,
                kTile);  // dK^T += Q^T dS
  if (t.dq)
    dp_gemm<true>(amx, mr, g.D16, kPairs, t.dsb, kPairs, ops.kp.data() + kv * ops.kp_size + j0 / 2 * g.D16, g.D16,
                  t.dq + (bh * g.Tqp + i0) * g.D16, g.D16);  // dQ += dS K
}

// The task's dK (times scale) and dV, its accumulators transposed back, for keys j0 .. j0 + nk of kv head hk.
void store_dkdv(const Geometry& g, const BackwardTiles& t, int64_t b, int64_t hk, int64_t j0, int64_t nk, bf16* dk,
                bf16* dv) {
  const __m512i cols = _mm512_mullo_epi32(kLane, _mm512_set1_epi32(int(kTile)));
  for (int64_t c = 0; c < nk; ++c) {
    for (int64_t d = 0; d < g.D16; d += 16)
      _mm512_storeu_ps(t.row + d, _mm512_i32gather_ps(cols, t.dKt + d * kTile + c, 4));
    store_bf16(t.row, g.scale, g.D, dk + ((b * g.Tk + j0 + c) * g.Hkv + hk) * g.D);
    for (int64_t d = 0; d < g.Dv16; d += 16)
      _mm512_storeu_ps(t.row + d, _mm512_i32gather_ps(cols, t.dVt + d * kTile + c, 4));
    store_bf16(t.row, 1.0f, g.Dv, dv + ((b * g.Tk + j0 + c) * g.Hkv + hk) * g.Dv);
  }
}

// dq = scale * the sum of the threads' dQ buffers (thread 0's row collects the others).
void sum_dq(const Geometry& g, float* dq_acc, int64_t nthreads, int64_t dq_size, bool parallel, bf16* dq) {
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t row = 0; row < g.B * g.Hq * g.Tq; ++row) {
    const int64_t bh = row / g.Tq, i = row % g.Tq, b = bh / g.Hq, h = bh % g.Hq;
    float* sum = dq_acc + (bh * g.Tqp + i) * g.D16;
    for (int64_t t = 1; t < nthreads; ++t)
      for (int64_t d = 0; d < g.D16; d += 16)
        _mm512_storeu_ps(sum + d, _mm512_add_ps(_mm512_loadu_ps(sum + d), _mm512_loadu_ps(sum + t * dq_size + d)));
    store_bf16(sum, g.scale, g.D, dq + ((b * g.Tq + i) * g.Hq + h) * g.D);
  }
}

}  // namespace

void attention_backward_dpbf16(const AttentionShape& shape, const bf16* q, const bf16* k, const bf16* v,
                               const bf16* out, const bf16* dout, const float* lse, bf16* dq, bf16* dk, bf16* dv) {
  const Geometry g(shape);
  if (g.B == 0 || g.Hq == 0) return;
  const bool parallel = double(g.B * g.Hq) * double(g.Tq) * double(g.Tk) * double(g.D + g.Dv) > kParallelWork;
  const bool amx = amx_bf16_enabled();
  Scratch<float> delta(std::max<int64_t>(1, g.B * g.Hq * g.Tq));
  row_deltas(g, out, dout, parallel, delta.data());
  sink_gradients(shape, lse, delta.data());
  const BackwardOperands ops(g, q, k, v, dout, parallel);

  const int64_t nthreads = parallel ? omp_get_max_threads() : 1;
  const int64_t dq_size = g.B * g.Hq * g.Tqp * g.D16;
  Scratch<float> dq_acc(dq ? nthreads * dq_size : 1);
  const int64_t nkt = g.Tkp / kTile, ntasks = g.B * g.Hkv * nkt;

#pragma omp parallel if (parallel)
  {
    const AmxScope tiles(amx);
    BackwardTiles t(g, dq ? dq_acc.data() + (parallel ? omp_get_thread_num() : 0) * dq_size : nullptr);

// Static round-robin: each thread takes the same tasks in the same order every run, so its dQ
// sums, and their total, are deterministic.
#pragma omp for schedule(static, 1)
    for (int64_t task = 0; task < ntasks; ++task) {
      const int64_t j0 = task / (g.B * g.Hkv) * kTile, nk = std::min(kTile, g.Tk - j0);
      const int64_t b = (task % (g.B * g.Hkv)) / g.Hkv, hk = task % g.Hkv;
      std::fill(t.dKt, t.dKt + g.D4 * kTile, 0.0f);
      std::fill(t.dVt, t.dVt + g.Dv4 * kTile, 0.0f);
      int64_t qlo, qhi;
      g.query_tiles(b, j0, nk, qlo, qhi);
      for (int64_t h = hk * g.G; h < (hk + 1) * g.G; ++h)
        for (int64_t i0 = qlo; i0 < qhi; i0 += kTile)
          if (g.ids_overlap(b, i0, std::min(std::min(kTile, g.Tq - i0), qhi - i0), j0, nk))
            backward_tile(g, ops, amx, q, dout, lse, delta.data(), b, h, b * g.Hkv + hk, i0, j0, nk, t);
      if (dk && dv) store_dkdv(g, t, b, hk, j0, nk, dk, dv);
    }
  }
  if (dq) sum_dq(g, dq_acc.data(), nthreads, dq_size, parallel, dq);
}

}  // namespace automodel::cpu::detail

#endif  // __AVX512BF16__
