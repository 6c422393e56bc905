#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/arith.h"
#include "kernels/cpu/attention_bf16.h"
#include "kernels/cpu/attention_mask.h"
#include "kernels/cpu/scratch.h"

namespace automodel::cpu {

namespace {

// Query rows and keys per tile. Per-thread scratch is a handful of 64 x 64 / 64 x head_dim tiles.
constexpr int64_t kTile = 64;
constexpr int kRowBlock = 4;  // rows of the GEMM micro-kernel; tiles are padded to a multiple of it

// 64-byte vectors (one AVX-512 register; lowered to narrower registers elsewhere).
typedef float vf32 __attribute__((vector_size(64)));
typedef double vf64 __attribute__((vector_size(64)));
typedef int32_t vi32 __attribute__((vector_size(64)));

template <class C>
struct Simd;
template <>
struct Simd<float> {
  using V = vf32;
  static constexpr int64_t W = 16;
};
template <>
struct Simd<double> {
  using V = vf64;
  static constexpr int64_t W = 8;
};

// Below this many multiply-adds a call runs on one thread: waking a team costs more than it saves.
constexpr double kParallelWork = 1 << 18;

template <class V, class C>
inline V splat(C c) {
  return V{} + c;
}

// ---------------------------------------------------------------------------------------------
// GEMM on tiles: c[M, N] (+)= sum_k a(i, k) * b[k, :] with a(i, k) = a[i * a_si + k * a_sk], so one
// routine covers A, A^T and the K-transposed layouts. b and c rows are W-aligned with N % W == 0,
// M % kRowBlock == 0. The micro-kernel keeps a kRowBlock x (NV * W) block of c in registers.

template <class C, int NV, bool ACC>
inline void micro_kernel(int64_t K, const C* a, int64_t a_si, int64_t a_sk, const C* b, int64_t ldb, C* c,
                         int64_t ldc) {
  using V = typename Simd<C>::V;
  constexpr int64_t W = Simd<C>::W;
  V acc[kRowBlock][NV];
#pragma GCC unroll 4
  for (int i = 0; i < kRowBlock; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = ACC ? *reinterpret_cast<const V*>(c + i * ldc + v * W) : V{};
  for (int64_t kk = 0; kk < K; ++kk) {
    const C* bk = b + kk * ldb;
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      bv[v] = *reinterpret_cast<const V*>(bk + v * W);
#if defined(__AVX512F__) && defined(__GNUC__)
      // Keep b in registers: otherwise GCC folds the load into every row's FMA, and the kernel
      // becomes load-bound (measured ~20% slower).
      asm("" : "+v"(bv[v]));
#endif
    }
    const C* ak = a + kk * a_sk;
#pragma GCC unroll 4
    for (int i = 0; i < kRowBlock; ++i) {
      C av = ak[i * a_si];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] += av * bv[v];
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < kRowBlock; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) *reinterpret_cast<V*>(c + i * ldc + v * W) = acc[i][v];
}

template <class C, bool ACC>
void gemm(int64_t M, int64_t N, int64_t K, const C* a, int64_t a_si, int64_t a_sk, const C* b, int64_t ldb, C* c,
          int64_t ldc) {
  constexpr int64_t W = Simd<C>::W;
  for (int64_t n0 = 0; n0 < N; n0 += 4 * W) {
    int64_t nv = std::min<int64_t>(4, (N - n0) / W);
    for (int64_t i0 = 0; i0 < M; i0 += kRowBlock) {
      const C* ai = a + i0 * a_si;
      const C* bn = b + n0;
      C* ci = c + i0 * ldc + n0;
      switch (nv) {
        case 4: micro_kernel<C, 4, ACC>(K, ai, a_si, a_sk, bn, ldb, ci, ldc); break;
        case 3: micro_kernel<C, 3, ACC>(K, ai, a_si, a_sk, bn, ldb, ci, ldc); break;
        case 2: micro_kernel<C, 2, ACC>(K, ai, a_si, a_sk, bn, ldb, ci, ldc); break;
        default: micro_kernel<C, 1, ACC>(K, ai, a_si, a_sk, bn, ldb, ci, ldc); break;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// exp and tanh over rows of kTile values. float: vectorised Cephes-style approximations (about
// 1 ulp); double: the C library (the f64 path exists for gradient checks).

__attribute__((always_inline)) inline vf32 exp_vec(vf32 x) {
  const vf32 hi = splat<vf32>(88.0f), lo = splat<vf32>(-87.33654475f);
  vi32 under = x < lo;  // also -inf: exp is 0
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  vf32 t = x * 1.44269504088896341f + 12582912.0f;  // round(x / ln 2) by the 1.5 * 2^23 trick
  vf32 n = t - 12582912.0f;
  vf32 r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf32 p = splat<vf32>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  vf32 y = p * (r * r) + r + 1.0f;
  vi32 bits = (__builtin_convertvector(n, vi32) + 127) << 23;
  vf32 pow2;
  std::memcpy(&pow2, &bits, sizeof(pow2));
  y = y * pow2;
  return under ? vf32{} : y;
}

__attribute__((always_inline)) inline vf32 tanh_vec(vf32 x) {
  vf32 ax = x < 0.0f ? -x : x;
  vf32 z = x * x;
  vf32 p = splat<vf32>(-5.70498872745e-3f);
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  vf32 small = p * z * x + x;
  vf32 big = 1.0f - 2.0f / (exp_vec(ax + ax) + 1.0f);
  big = x < 0.0f ? -big : big;
  return ax < 0.625f ? small : big;
}

// x[c] = exp(x[c] - sub) for c < kTile; returns the sum.
inline float exp_sub_sum(float* x, float sub) {
  vf32 sum{};
  for (int64_t c = 0; c < kTile; c += 16) {
    vf32* p = reinterpret_cast<vf32*>(x + c);
    *p = exp_vec(*p - sub);
    sum += *p;
  }
  float s = 0;
  for (int i = 0; i < 16; ++i) s += sum[i];
  return s;
}
inline double exp_sub_sum(double* x, double sub) {
  double s = 0;
  for (int64_t c = 0; c < kTile; ++c) {
    x[c] = std::exp(x[c] - sub);
    s += x[c];
  }
  return s;
}

// Elementwise over n values (n % W == 0): x = exp(x - sub), and sum += x when sum is not null.
inline void exp_sub_vec(float* x, const float* sub, float* sum, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    vf32* p = reinterpret_cast<vf32*>(x + i);
    *p = exp_vec(*p - *reinterpret_cast<const vf32*>(sub + i));
    if (sum) *reinterpret_cast<vf32*>(sum + i) += *p;
  }
}
inline void exp_sub_vec(double* x, const double* sub, double* sum, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - sub[i]);
    if (sum) sum[i] += x[i];
  }
}

// s = cap * tanh(s / cap) over n values (n % W == 0); dcap = 1 - tanh^2 (the derivative) when
// dcap is not null.
inline void softcap_row(float* s, float* dcap, float cap, int64_t n) {
  for (int64_t c = 0; c < n; c += 16) {
    vf32* p = reinterpret_cast<vf32*>(s + c);
    vf32 t = tanh_vec(*p * (1.0f / cap));
    *p = t * cap;
    if (dcap) *reinterpret_cast<vf32*>(dcap + c) = 1.0f - t * t;
  }
}
inline void softcap_row(double* s, double* dcap, double cap, int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    double t = std::tanh(s[c] / cap);
    s[c] = t * cap;
    if (dcap) dcap[c] = 1 - t * t;
  }
}

// ---------------------------------------------------------------------------------------------
// The sizes of one call, its mask (attention_mask.h) and the tile loaders.
template <class T>
struct Geometry : detail::AttentionMask {
  using C = compute_t<T>;
  static constexpr int64_t W = Simd<C>::W;
  int64_t B, Hq, Hkv, D, Dv, G, Dp, Dvp;
  C scale, cap;
  const C* sinks;  // [Hq] or null

  explicit Geometry(const AttentionShape& s)
      : AttentionMask(s),
        B(s.batch),
        Hq(s.q_heads),
        Hkv(s.kv_heads),
        D(s.head_dim),
        Dv(s.v_head_dim),
        G(s.kv_heads > 0 ? s.q_heads / s.kv_heads : 1),
        Dp(round_up(s.head_dim, W)),
        Dvp(round_up(s.v_head_dim, W)),
        scale(C(s.scale)),
        cap(C(s.softcap)),
        sinks(static_cast<const C*>(s.sinks)) {}

  // dst[r, d] = mult * x[b, t0 + r, h, d] (x is [B, len, H, width]) for r < n; zeros up to rows mr
  // and columns ldd.
  void load_rows(const T* x, int64_t b, int64_t h, int64_t t0, int64_t n, int64_t mr, int64_t len, int64_t H,
                 int64_t width, int64_t ldd, C mult, C* dst) const {
    for (int64_t r = 0; r < mr; ++r) {
      C* o = dst + r * ldd;
      if (r < n) {
        const T* src = x + ((b * len + t0 + r) * H + h) * width;
#pragma omp simd
        for (int64_t d = 0; d < width; ++d) o[d] = mult * C(to_compute(src[d]));
        for (int64_t d = width; d < ldd; ++d) o[d] = 0;
      } else {
        std::fill(o, o + ldd, C(0));
      }
    }
  }
  // Transposed: dst[d, r] (row stride kTile) = mult * x[b, t0 + r, h, d] for r < n, zero for
  // n <= r < kTile.
  void load_transposed(const T* x, int64_t b, int64_t h, int64_t t0, int64_t n, int64_t len, int64_t H, int64_t width,
                       C mult, C* dst) const {
    for (int64_t r = 0; r < kTile; ++r) {
      if (r < n) {
        const T* src = x + ((b * len + t0 + r) * H + h) * width;
        for (int64_t d = 0; d < width; ++d) dst[d * kTile + r] = mult * C(to_compute(src[d]));
      } else {
        for (int64_t d = 0; d < width; ++d) dst[d * kTile + r] = 0;
      }
    }
  }
  // Tasks over (batch, query head, query tile), later query tiles first: under a causal mask they
  // see the most keys, so handing them out first balances the threads.
  struct QueryTask {
    int64_t b, h, hk, i0, nq, mr, nqp;
  };
  int64_t query_tiles() const { return (Tq + kTile - 1) / kTile; }
  int64_t query_tasks() const { return B * Hq * query_tiles(); }
  QueryTask query_task(int64_t task) const {
    const int64_t bh_count = B * Hq, qtile = query_tiles() - 1 - task / bh_count;
    const int64_t h = task % Hq, i0 = qtile * kTile, nq = std::min(kTile, Tq - i0);
    return {(task % bh_count) / Hq, h, h / G, i0, nq, round_up(nq, kRowBlock), round_up(nq, W)};
  }

  // Sequence ids of positions p0 + r (0 without ids, and for r >= n).
  void load_ids(int64_t b, int64_t p0, int64_t n, int64_t* out) const {
    for (int64_t r = 0; r < kTile; ++r) out[r] = ids && r < n ? ids[b * Tk + p0 + r] : 0;
  }

  // Query-major score tile S[r, c] for queries i0 + r (r < mr) and keys j0 + c (c < kTile):
  // pre-scaled q . k, soft-capped (dcap = 1 - tanh^2 when not null), -inf where masked (rows
  // r < nq; columns c >= nk are always masked).
  void scores_qk(int64_t b, const C* qs, const C* kt, const int64_t* kid, const int64_t* qid, int64_t i0, int64_t nq,
                 int64_t mr, int64_t j0, int64_t nk, C* S, C* dcap) const {
    gemm<C, false>(mr, kTile, D, qs, Dp, 1, kt, kTile, S, kTile);
    if (cap > 0)
      for (int64_t r = 0; r < mr; ++r) softcap_row(S + r * kTile, dcap ? dcap + r * kTile : nullptr, cap, kTile);
    if (nk == kTile && !tile_needs_mask(i0, nq, j0, nk)) return;
    const C neg_inf = -std::numeric_limits<C>::infinity();
    for (int64_t r = 0; r < nq; ++r) {
      int64_t lo, hi;
      row_keys(b, i0 + r + off, j0, nk, lo, hi);
      const int64_t id = qid[r];
      C* s = S + r * kTile;
#pragma omp simd
      for (int64_t c = 0; c < kTile; ++c) s[c] = (c < lo || c >= hi || kid[c] != id) ? neg_inf : s[c];
    }
  }

  // Key-major score tile St[c, i] for keys j0 + c (c < mk) and queries i0 + i (i < nqp), from key
  // rows kn [mk, Dp] and transposed pre-scaled queries qt [D, kTile]; -inf where masked (rows
  // c < nk; padding rows and columns are left to the caller).
  void scores_kq(int64_t b, const C* kn, const C* qt, const int64_t* kid, const int64_t* qid, int64_t i0, int64_t nq,
                 int64_t nqp, int64_t j0, int64_t nk, int64_t mk, C* St, C* dcap) const {
    gemm<C, false>(mk, nqp, D, kn, Dp, 1, qt, kTile, St, kTile);
    if (cap > 0)
      for (int64_t c = 0; c < nk; ++c) softcap_row(St + c * kTile, dcap ? dcap + c * kTile : nullptr, cap, nqp);
    if (!tile_needs_mask(i0, nq, j0, nk)) return;
    const C neg_inf = -std::numeric_limits<C>::infinity();
    for (int64_t c = 0; c < nk; ++c) {
      int64_t lo, hi;
      key_queries(b, j0 + c, i0, lo, hi);
      const int64_t id = kid[c];
      C* s = St + c * kTile;
#pragma omp simd
      for (int64_t i = 0; i < nqp; ++i) s[i] = (i < lo || i >= hi || qid[i] != id) ? neg_inf : s[i];
    }
  }
};

// ---------------------------------------------------------------------------------------------

// Whether a call's work pays for waking the thread team.
template <class T>
bool runs_parallel(const Geometry<T>& g) {
  return double(g.B * g.Hq) * double(g.Tq) * double(g.Tk) * double(g.D + g.Dv) > kParallelWork;
}

// Forward: one task per (batch, query head, query tile). Scores are computed key-major
// (St[key, query] = k . q^T with q transposed once per task), so key and value tiles are plain row
// copies and the online softmax runs down the columns, vectorised across queries.
template <class T>
void forward_impl(const AttentionShape& shape, const T* q, const T* k, const T* v, T* out, compute_t<T>* lse) {
  using C = compute_t<T>;
  const Geometry<T> g(shape);
  if (g.B == 0 || g.Tq == 0 || g.Hq == 0) return;
  const int64_t ntasks = g.query_tasks();
  const C inf = std::numeric_limits<C>::infinity();

#pragma omp parallel if (runs_parallel(g))
  {
    Scratch<C> w(g.Dp * kTile + kTile * g.Dp + kTile * g.Dvp + kTile * kTile + kTile * g.Dvp + 6 * kTile);
    C* qt = w.take(g.Dp * kTile);
    C* kn = w.take(kTile * g.Dp);
    C* vn = w.take(kTile * g.Dvp);
    C* St = w.take(kTile * kTile);
    C* O = w.take(kTile * g.Dvp);
    C* m = w.take(kTile);      // running max per query
    C* l = w.take(kTile);      // running sum per query
    C* base = w.take(kTile);   // max used for this tile's exponentials (0 while nothing is seen)
    C* alpha = w.take(kTile);  // rescale of the earlier sum and output
    C* mx = w.take(kTile);
    C* tsum = w.take(kTile);
    int64_t kid[kTile], qid[kTile];

#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < ntasks; ++task) {
      const auto [b, h, hk, i0, nq, mr, nqp] = g.query_task(task);
      g.load_transposed(q, b, h, i0, nq, g.Tq, g.Hq, g.D, g.scale, qt);
      g.load_ids(b, i0 + g.off, nq, qid);
      std::fill(O, O + mr * g.Dvp, C(0));
      // A sink starts each row's softmax as a key of score `sink` whose value is zero.
      std::fill(m, m + kTile, g.sinks ? g.sinks[h] : -inf);
      std::fill(l, l + kTile, C(g.sinks ? 1 : 0));
      int64_t klo, khi;
      g.key_range(b, i0, nq, klo, khi);
      for (int64_t j0 = klo; j0 < khi; j0 += kTile) {
        const int64_t nk = std::min(kTile, khi - j0), mk = round_up(nk, kRowBlock);
        if (!g.ids_overlap(b, i0, nq, j0, nk)) continue;
        g.load_rows(k, b, hk, j0, nk, mk, g.Tk, g.Hkv, g.D, g.Dp, C(1), kn);
        g.load_rows(v, b, hk, j0, nk, nk, g.Tk, g.Hkv, g.Dv, g.Dvp, C(1), vn);
        g.load_ids(b, j0, nk, kid);
        g.scores_kq(b, kn, qt, kid, qid, i0, nq, nqp, j0, nk, mk, St, nullptr);
        std::fill(mx, mx + nqp, -inf);
        for (int64_t c = 0; c < nk; ++c) {
          const C* s = St + c * kTile;
#pragma omp simd
          for (int64_t i = 0; i < nqp; ++i) mx[i] = std::max(mx[i], s[i]);
        }
#pragma omp simd
        for (int64_t i = 0; i < nqp; ++i) {
          const C m_new = std::max(m[i], mx[i]);
          base[i] = m_new == -inf ? C(0) : m_new;
          alpha[i] = m[i];  // exp(m - base) below; exp(-inf) = 0
          m[i] = m_new;
          tsum[i] = 0;
        }
        exp_sub_vec(alpha, base, nullptr, nqp);
        for (int64_t c = 0; c < nk; ++c) exp_sub_vec(St + c * kTile, base, tsum, nqp);
#pragma omp simd
        for (int64_t i = 0; i < nqp; ++i) l[i] = l[i] * alpha[i] + tsum[i];
        for (int64_t i = 0; i < mr; ++i) {
          if (alpha[i] == C(1)) continue;
          C* o = O + i * g.Dvp;
          const C a = alpha[i];
#pragma omp simd
          for (int64_t d = 0; d < g.Dvp; ++d) o[d] *= a;
        }
        gemm<C, true>(mr, g.Dvp, nk, St, 1, kTile, vn, g.Dvp, O, g.Dvp);  // O += P V
      }
      for (int64_t r = 0; r < nq; ++r) {
        T* dst = out + ((b * g.Tq + i0 + r) * g.Hq + h) * g.Dv;
        const C* o = O + r * g.Dvp;
        const C inv = l[r] > 0 ? C(1) / l[r] : C(0);
        for (int64_t d = 0; d < g.Dv; ++d) dst[d] = from_compute<T>(o[d] * inv);
        lse[(b * g.Hq + h) * g.Tq + i0 + r] = l[r] > 0 ? m[r] + C(std::log(l[r])) : inf;
      }
    }
  }
}

// Backward. delta[b, h, i] = sum_d dout * out; with P = exp(S - lse) recomputed per tile,
// dP = dO V^T and dS = P * (dP - delta) * (1 - tanh^2 when soft-capped), the gradients are
// dV = P^T dO, dK = dS^T (scale q), dQ = scale * dS K. Two passes keep every write private to its
// task: dK/dV per (batch, kv head, key tile) summing over the group's query heads (backward_dkdv),
// then dQ per (batch, query head, query tile) (backward_dq).

// delta[(b * Hq + h) * Tq + i] = sum_d dout * out of query row i of head h.
template <class T>
void row_deltas(const Geometry<T>& g, const T* out, const T* dout, compute_t<T>* delta) {
  using C = compute_t<T>;
  const int64_t rows = g.B * g.Tq * g.Hq;
#pragma omp parallel for schedule(static) if (runs_parallel(g))
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t b = row / (g.Tq * g.Hq), i = (row / g.Hq) % g.Tq, h = row % g.Hq;
    const T* o = out + row * g.Dv;
    const T* go = dout + row * g.Dv;
    C acc = 0;
    for (int64_t d = 0; d < g.Dv; ++d) acc += C(to_compute(o[d])) * C(to_compute(go[d]));
    delta[(b * g.Hq + h) * g.Tq + i] = acc;
  }
}

// lse and delta of query rows i0 + r; padding rows get lse = +inf (P = 0) and delta = 0.
template <class T, class C = compute_t<T>>
void load_row_stats(const Geometry<T>& g, const C* lse, const C* delta, int64_t b, int64_t h, int64_t i0, int64_t nq,
                    C* lse_rows, C* delta_rows) {
  for (int64_t r = 0; r < kTile; ++r) {
    const int64_t idx = (b * g.Hq + h) * g.Tq + i0 + r;
    lse_rows[r] = r < nq ? C(lse[idx]) : std::numeric_limits<C>::infinity();
    delta_rows[r] = r < nq ? delta[idx] : C(0);
  }
}

// dS = P * (dP - delta) (* dcap when soft-capped) over a row of n values, in place of dP: one query's row (a
// single delta), or one key's row across queries (a delta per value).
template <class C>
inline void score_grads(const C* p, C* ds, C delta, const C* dcap, int64_t n) {
  if (dcap) {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) ds[c] = p[c] * (ds[c] - delta) * dcap[c];
  } else {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) ds[c] = p[c] * (ds[c] - delta);
  }
}
template <class C>
inline void score_grads(const C* p, C* ds, const C* delta, const C* dcap, int64_t n) {
  if (dcap) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) ds[i] = p[i] * (ds[i] - delta[i]) * dcap[i];
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) ds[i] = p[i] * (ds[i] - delta[i]);
  }
}

// Pass 1's per-thread tiles.
template <class C>
struct DkDvTiles {
  Scratch<C> w;
  C *qs, *dO, *kt, *vt, *S, *dS, *dcap, *dK, *dV, *lse_rows, *delta_rows;
  int64_t kid[kTile], qid[kTile];
  template <class T>
  explicit DkDvTiles(const Geometry<T>& g)
      : w(kTile * g.Dp + kTile * g.Dvp + g.Dp * kTile + g.Dvp * kTile + 3 * kTile * kTile + kTile * g.Dp +
          kTile * g.Dvp + 2 * kTile),
        qs(w.take(kTile * g.Dp)),
        dO(w.take(kTile * g.Dvp)),
        kt(w.take(g.Dp * kTile)),
        vt(w.take(g.Dvp * kTile)),
        S(w.take(kTile * kTile)),
        dS(w.take(kTile * kTile)),
        dcap(w.take(kTile * kTile)),
        dK(w.take(kTile * g.Dp)),
        dV(w.take(kTile * g.Dvp)),
        lse_rows(w.take(kTile)),
        delta_rows(w.take(kTile)) {}
};

// Pass 1, one task: dK and dV of key tile j0 of kv head hk, from query-major tiles S[query, key] of the group's
// query heads against the key tile's K and V (transposed once).
template <class T>
void dkdv_task(const Geometry<T>& g, const T* q, const T* k, const T* v, const T* dout, const compute_t<T>* lse,
               const compute_t<T>* delta, int64_t b, int64_t hk, int64_t j0, DkDvTiles<compute_t<T>>& t, T* dk, T* dv) {
  using C = compute_t<T>;
  const int64_t nk = std::min(kTile, g.Tk - j0);
  std::fill(t.dK, t.dK + kTile * g.Dp, C(0));
  std::fill(t.dV, t.dV + kTile * g.Dvp, C(0));
  int64_t qlo, qhi;
  g.query_range(b, j0, nk, qlo, qhi);
  if (qlo < qhi) {
    g.load_transposed(k, b, hk, j0, nk, g.Tk, g.Hkv, g.D, C(1), t.kt);
    g.load_transposed(v, b, hk, j0, nk, g.Tk, g.Hkv, g.Dv, C(1), t.vt);
    g.load_ids(b, j0, nk, t.kid);
  }
  C* dcap = g.cap > 0 ? t.dcap : nullptr;
  for (int64_t h = hk * g.G; h < (hk + 1) * g.G; ++h) {
    for (int64_t i0 = qlo; i0 < qhi; i0 += kTile) {
      const int64_t nq = std::min(kTile, qhi - i0), mr = round_up(nq, kRowBlock);
      if (!g.ids_overlap(b, i0, nq, j0, nk)) continue;
      g.load_rows(q, b, h, i0, nq, mr, g.Tq, g.Hq, g.D, g.Dp, g.scale, t.qs);
      g.load_rows(dout, b, h, i0, nq, mr, g.Tq, g.Hq, g.Dv, g.Dvp, C(1), t.dO);
      g.load_ids(b, i0 + g.off, nq, t.qid);
      load_row_stats(g, lse, delta, b, h, i0, nq, t.lse_rows, t.delta_rows);
      g.scores_qk(b, t.qs, t.kt, t.kid, t.qid, i0, nq, mr, j0, nk, t.S, dcap);
      for (int64_t r = 0; r < mr; ++r) exp_sub_sum(t.S + r * kTile, t.lse_rows[r]);  // S becomes P
      gemm<C, false>(mr, kTile, g.Dv, t.dO, g.Dvp, 1, t.vt, kTile, t.dS, kTile);     // dP = dO V^T
      for (int64_t r = 0; r < mr; ++r)
        score_grads(t.S + r * kTile, t.dS + r * kTile, t.delta_rows[r], dcap ? dcap + r * kTile : nullptr, kTile);
      gemm<C, true>(kTile, g.Dvp, mr, t.S, 1, kTile, t.dO, g.Dvp, t.dV, g.Dvp);  // dV += P^T dO
      gemm<C, true>(kTile, g.Dp, mr, t.dS, 1, kTile, t.qs, g.Dp, t.dK, g.Dp);    // dK += dS^T (scale q)
    }
  }
  for (int64_t c = 0; c < nk; ++c) {
    T* dkr = dk + ((b * g.Tk + j0 + c) * g.Hkv + hk) * g.D;
    T* dvr = dv + ((b * g.Tk + j0 + c) * g.Hkv + hk) * g.Dv;
    for (int64_t d = 0; d < g.D; ++d) dkr[d] = from_compute<T>(t.dK[c * g.Dp + d]);
    for (int64_t d = 0; d < g.Dv; ++d) dvr[d] = from_compute<T>(t.dV[c * g.Dvp + d]);
  }
}

template <class T>
void backward_dkdv(const Geometry<T>& g, const T* q, const T* k, const T* v, const T* dout, const compute_t<T>* lse,
                   const compute_t<T>* delta, T* dk, T* dv) {
  const int64_t nkt = (g.Tk + kTile - 1) / kTile, ntasks = g.B * g.Hkv * nkt;
  if (ntasks == 0) return;
#pragma omp parallel if (runs_parallel(g))
  {
    DkDvTiles<compute_t<T>> tiles(g);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < ntasks; ++task) {
      const int64_t ktile = task / (g.B * g.Hkv);  // early key tiles have the most queries (causal)
      const int64_t b = (task % (g.B * g.Hkv)) / g.Hkv, hk = task % g.Hkv;
      dkdv_task(g, q, k, v, dout, lse, delta, b, hk, ktile * kTile, tiles, dk, dv);
    }
  }
}

// Pass 2's per-thread tiles.
template <class C>
struct DqTiles {
  Scratch<C> w;
  C *qt, *dOt, *kn, *vn, *St, *dSt, *dcap, *dQ, *lse_cols, *delta_cols;
  int64_t kid[kTile], qid[kTile];
  template <class T>
  explicit DqTiles(const Geometry<T>& g)
      : w(g.Dp * kTile + g.Dvp * kTile + kTile * g.Dp + kTile * g.Dvp + 3 * kTile * kTile + kTile * g.Dp + 2 * kTile),
        qt(w.take(g.Dp * kTile)),
        dOt(w.take(g.Dvp * kTile)),
        kn(w.take(kTile * g.Dp)),
        vn(w.take(kTile * g.Dvp)),
        St(w.take(kTile * kTile)),
        dSt(w.take(kTile * kTile)),
        dcap(w.take(kTile * kTile)),
        dQ(w.take(kTile * g.Dp)),
        lse_cols(w.take(kTile)),
        delta_cols(w.take(kTile)) {}
};

// Pass 2, one task: dQ of one query tile, key-major tiles St[key, query] as in forward (q and dO transposed once).
template <class T>
void dq_task(const Geometry<T>& g, const T* q, const T* k, const T* v, const T* dout, const compute_t<T>* lse,
             const compute_t<T>* delta, int64_t task, DqTiles<compute_t<T>>& t, T* dq) {
  using C = compute_t<T>;
  const auto [b, h, hk, i0, nq, mr, nqp] = g.query_task(task);
  g.load_transposed(q, b, h, i0, nq, g.Tq, g.Hq, g.D, g.scale, t.qt);
  g.load_transposed(dout, b, h, i0, nq, g.Tq, g.Hq, g.Dv, C(1), t.dOt);
  g.load_ids(b, i0 + g.off, nq, t.qid);
  load_row_stats(g, lse, delta, b, h, i0, nq, t.lse_cols, t.delta_cols);
  std::fill(t.dQ, t.dQ + mr * g.Dp, C(0));
  C* dcap = g.cap > 0 ? t.dcap : nullptr;
  int64_t klo, khi;
  g.key_range(b, i0, nq, klo, khi);
  for (int64_t j0 = klo; j0 < khi; j0 += kTile) {
    const int64_t nk = std::min(kTile, khi - j0), mk = round_up(nk, kRowBlock);
    if (!g.ids_overlap(b, i0, nq, j0, nk)) continue;
    g.load_rows(k, b, hk, j0, nk, mk, g.Tk, g.Hkv, g.D, g.Dp, C(1), t.kn);
    g.load_rows(v, b, hk, j0, nk, mk, g.Tk, g.Hkv, g.Dv, g.Dvp, C(1), t.vn);
    g.load_ids(b, j0, nk, t.kid);
    g.scores_kq(b, t.kn, t.qt, t.kid, t.qid, i0, nq, nqp, j0, nk, mk, t.St, dcap);
    for (int64_t c = 0; c < nk; ++c) exp_sub_vec(t.St + c * kTile, t.lse_cols, nullptr, nqp);  // St becomes P^T
    gemm<C, false>(mk, nqp, g.Dv, t.vn, g.Dvp, 1, t.dOt, kTile, t.dSt, kTile);                 // dP^T = V dO^T
    for (int64_t c = 0; c < nk; ++c)
      score_grads(t.St + c * kTile, t.dSt + c * kTile, t.delta_cols, dcap ? dcap + c * kTile : nullptr, nqp);
    gemm<C, true>(mr, g.Dp, nk, t.dSt, 1, kTile, t.kn, g.Dp, t.dQ, g.Dp);  // dQ += dS K
  }
  for (int64_t r = 0; r < nq; ++r) {
    T* dst = dq + ((b * g.Tq + i0 + r) * g.Hq + h) * g.D;
    for (int64_t d = 0; d < g.D; ++d) dst[d] = from_compute<T>(t.dQ[r * g.Dp + d] * g.scale);
  }
}

template <class T>
void backward_dq(const Geometry<T>& g, const T* q, const T* k, const T* v, const T* dout, const compute_t<T>* lse,
                 const compute_t<T>* delta, T* dq) {
  const int64_t ntasks = g.query_tasks();
#pragma omp parallel if (runs_parallel(g))
  {
    DqTiles<compute_t<T>> tiles(g);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < ntasks; ++task) dq_task(g, q, k, v, dout, lse, delta, task, tiles, dq);
  }
}

template <class T>
void backward_impl(const AttentionShape& shape, const T* q, const T* k, const T* v, const T* out, const T* dout,
                   const compute_t<T>* lse, T* dq, T* dk, T* dv) {
  const Geometry<T> g(shape);
  if (g.B == 0 || g.Hq == 0) return;
  Scratch<compute_t<T>> delta(std::max<int64_t>(1, g.B * g.Hq * g.Tq));
  row_deltas(g, out, dout, delta.data());
  detail::sink_gradients(shape, lse, delta.data());
  if (dk && dv) backward_dkdv(g, q, k, v, dout, lse, delta.data(), dk, dv);
  if (dq && g.Tq > 0) backward_dq(g, q, k, v, dout, lse, delta.data(), dq);
}

template <class C>
void sink_gradients_impl(const AttentionShape& s, const C* lse, const C* delta) {
  if (!s.dsinks || !s.sinks) return;
  const C* sinks = static_cast<const C*>(s.sinks);
  C* dsinks = static_cast<C*>(s.dsinks);
  for (int64_t h = 0; h < s.q_heads; ++h) {
    double acc = 0;
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t i = 0; i < s.q_len; ++i) {
        const int64_t idx = (b * s.q_heads + h) * s.q_len + i;
        acc += std::exp(double(sinks[h]) - double(lse[idx])) * double(delta[idx]);
      }
    dsinks[h] = C(-acc);
  }
}

}  // namespace

namespace detail {
void sink_gradients(const AttentionShape& s, const float* lse, const float* delta) {
  sink_gradients_impl(s, lse, delta);
}
void sink_gradients(const AttentionShape& s, const double* lse, const double* delta) {
  sink_gradients_impl(s, lse, delta);
}
}  // namespace detail

void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                       float* lse) {
  forward_impl(s, q, k, v, out, lse);
}
void attention_forward(const AttentionShape& s, const double* q, const double* k, const double* v, double* out,
                       double* lse) {
  forward_impl(s, q, k, v, out, lse);
}
void attention_forward(const AttentionShape& s, const bf16* q, const bf16* k, const bf16* v, bf16* out, float* lse) {
#if defined(__AVX512BF16__)
  if (detail::dpbf16_attention_serves(s)) return detail::attention_forward_dpbf16(s, q, k, v, out, lse);
#endif
  forward_impl(s, q, k, v, out, lse);
}

void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v, const float* out,
                        const float* dout, const float* lse, float* dq, float* dk, float* dv) {
  backward_impl(s, q, k, v, out, dout, lse, dq, dk, dv);
}
void attention_backward(const AttentionShape& s, const double* q, const double* k, const double* v, const double* out,
                        const double* dout, const double* lse, double* dq, double* dk, double* dv) {
  backward_impl(s, q, k, v, out, dout, lse, dq, dk, dv);
}
void attention_backward(const AttentionShape& s, const bf16* q, const bf16* k, const bf16* v, const bf16* out,
                        const bf16* dout, const float* lse, bf16* dq, bf16* dk, bf16* dv) {
#if defined(__AVX512BF16__)
  if (detail::dpbf16_attention_serves(s))
    return detail::attention_backward_dpbf16(s, q, k, v, out, dout, lse, dq, dk, dv);
#endif
  backward_impl(s, q, k, v, out, dout, lse, dq, dk, dv);
}

}  // namespace automodel::cpu
