#include "kernels/cpu/linear_cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "core/error.h"
#include "core/threads.h"
#include "kernels/cpu/cast.h"
#include "kernels/cpu/fast_math.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/vec16.h"

namespace automodel::cpu {

namespace {

constexpr size_t kAlign = 64;
constexpr int64_t kSumBlock = 2048;                   // elements whose lane sums are added into a double
constexpr int64_t kTileBytes = int64_t(8) << 20;      // fp32 d(weight) tile (bf16): L3-resident
constexpr int64_t kGradTileBytes = int64_t(2) << 20;  // bf16 gradient tile: L2-resident

size_t aligned(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// Vocabulary rows of the fp32 tile through which a bf16 chunk's d(weight) is added (see run()).
int64_t tile_rows(int64_t hidden) { return std::max<int64_t>(64, kTileBytes / (4 * std::max<int64_t>(hidden, 1))); }

// Vocabulary columns of a bf16 chunk's gradient tile (see run()): a d(weight) tile's rows at most.
int64_t grad_tile_columns(const LinearCrossEntropyProblem& p) {
  const int64_t fit = std::max<int64_t>(64, kGradTileBytes / (2 * std::max<int64_t>(p.chunk, 1)));
  return std::min({fit, tile_rows(p.hidden), p.vocab});
}

// Where each part of the workspace lies, for a chunk of p.chunk rows.
struct Layout {
  size_t logits = 0, tile = 0, grad_tile = 0, dhidden32 = 0, hidden = 0, dhidden = 0, index = 0, labels = 0, loss = 0,
         total = 0;
};

Layout layout(const LinearCrossEntropyProblem& p, size_t compute_size, size_t storage_size, bool want_grad) {
  const size_t m = size_t(std::max<int64_t>(p.chunk, 1)), V = size_t(p.vocab), H = size_t(p.hidden);
  Layout l;
  size_t at = 0;
  auto take = [&](size_t bytes) {
    const size_t here = at;
    at += aligned(bytes);
    return here;
  };
  // The gradient overwrites the logits in place (a bf16 one in the first half of each row's bytes).
  l.logits = take(m * V * compute_size);
  if (want_grad && storage_size != compute_size) {
    l.tile = take(size_t(std::min(tile_rows(p.hidden), p.vocab)) * H * 4);
    l.grad_tile = take(m * size_t(grad_tile_columns(p)) * storage_size);
    l.dhidden32 = take(m * H * 4);
  }
  l.hidden = take(m * H * storage_size);
  if (want_grad) l.dhidden = take(m * H * storage_size);
  l.index = take(m * sizeof(int64_t));
  l.labels = take(m * sizeof(int64_t));
  l.loss = take(m * sizeof(double));
  l.total = at;
  return l;
}

// ---------------------------------------------------------------------------------------------
// One row of logits: soft-capping, max, sum of exponentials, gradient. float runs on 16-lane vectors
// (AVX-512 with -march=native; GCC / Clang vector extensions elsewhere) with fast_math.h's exp and
// tanh algorithms; double, which serves the gradient checks, runs scalar with the C library. Stores
// go through memcpy (vec16.h): the gradient is written over the logits it is computed from.

#if defined(__GNUC__)
#define AM_LCE_VECTOR 1
using namespace vec16;

// exp_fast on a vector, for x <= 88 (the softmax and tanh only pass x <= 0). NaN stays NaN.
inline vf vexp(vf x) {
  const vi under = x < -87.33654f;  // underflows to 0 (also -inf)
  x = x < -87.33654f ? vf{} - 87.33654f : x;
  x = x > 88.0f ? vf{} + 88.0f : x;
  const vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  vf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf q = vf{} + 1.9875691500e-4f;
  q = q * r + 1.3981999507e-3f;
  q = q * r + 8.3334519073e-3f;
  q = q * r + 4.1665795894e-2f;
  q = q * r + 1.6666665459e-1f;
  q = q * r + 5.0000001201e-1f;
  const vf y = q * (r * r) + r + 1.0f;
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  vf pow2;
  std::memcpy(&pow2, &bits, sizeof(pow2));
  return under ? vf{} : y * pow2;
}

// tanh_fast on a vector.
inline vf vtanh(vf x) {
  const vf ax = x < 0.0f ? -x : x;
  const vf e = vexp(-2.0f * ax);
  const vf big = (1.0f - e) / (1.0f + e);
  const vf x2 = ax * ax;
  vf q = vf{} + 21844.0f / 6081075.0f;
  q = q * x2 - 1382.0f / 155925.0f;
  q = q * x2 + 62.0f / 2835.0f;
  q = q * x2 - 17.0f / 315.0f;
  q = q * x2 + 2.0f / 15.0f;
  q = q * x2 - 1.0f / 3.0f;
  const vf small = ax + ax * x2 * q;
  const vf t = ax < 0.3f ? small : big;
  return x < 0.0f ? -t : t;
}

inline float hmax(vf v) {
  float m = v[0];
  for (int j = 1; j < kW; ++j) m = v[j] > m ? v[j] : m;
  return m;
}
inline double hsum(vf v) {
  float s = 0;
  for (int j = 0; j < kW; ++j) s += v[j];
  return double(s);
}
#endif

template <class O>
inline void store_one(O* p, float v) {
  const O o = from_compute<O>(v);
  std::memcpy(static_cast<void*>(p), &o, sizeof(O));
}

// Soft-caps x in place when cap > 0 and returns the row's max (NaN-blind: a NaN surfaces in the sum).
float row_max(float* x, int64_t n, float cap) {
  int64_t i = 0;
  float m = -INFINITY;
#ifdef AM_LCE_VECTOR
  vf a = vf{} - INFINITY, b = a;
  if (cap > 0) {
    const float inv = 1.0f / cap;
    for (; i + kW <= n; i += kW) {
      const vf v = vtanh(load(x + i) * inv) * cap;
      store(x + i, v);
      a = v > a ? v : a;
    }
  } else {
    for (; i + 2 * kW <= n; i += 2 * kW) {
      const vf v = load(x + i), w = load(x + i + kW);
      a = v > a ? v : a;
      b = w > b ? w : b;
    }
  }
  a = b > a ? b : a;
  m = hmax(a);
#endif
  for (; i < n; ++i) {
    if (cap > 0) x[i] = cap * tanh_fast(x[i] / cap);
    m = x[i] > m ? x[i] : m;
  }
  return m;
}

// sum(exp(x - m)); with kStore, x[v] becomes exp(x[v] - m) (the gradient pass then needs no exp).
template <bool kStore>
double row_sum_exp(float* x, int64_t n, float m) {
  double total = 0;
  int64_t i = 0;
#ifdef AM_LCE_VECTOR
  for (int64_t b = 0; b + kW <= n; b += kSumBlock) {
    const int64_t e = std::min(n, b + kSumBlock);
    vf s0{}, s1{};
    for (i = b; i + 2 * kW <= e; i += 2 * kW) {
      const vf e0 = vexp(load(x + i) - m), e1 = vexp(load(x + i + kW) - m);
      if (kStore) store(x + i, e0), store(x + i + kW, e1);
      s0 += e0;
      s1 += e1;
    }
    for (; i + kW <= e; i += kW) {
      const vf e0 = vexp(load(x + i) - m);
      if (kStore) store(x + i, e0);
      s0 += e0;
    }
    total += hsum(s0 + s1);
  }
#endif
  for (; i < n; ++i) {
    const float e = exp_fast(x[i] - m);
    if (kStore) x[i] = e;
    total += double(e);
  }
  return total;
}

// d[v] = e[v] * f, e = exp(x - m) from row_sum_exp<true> and f = scale / sum.
template <class O>
void row_grad_from_exp(const float* e, int64_t n, float f, O* d) {
  int64_t i = 0;
#ifdef AM_LCE_VECTOR
  for (; i + kW <= n; i += kW) store(d + i, load(e + i) * f);
#endif
  for (; i < n; ++i) store_one(d + i, e[i] * f);
}

// d[v] = exp((x[v] - m) - logsum) * s * (1 - (x[v] / cap)^2): the soft-capped gradient, from the capped x.
template <class O>
void row_grad_softcap(const float* x, int64_t n, float m, float logsum, float s, float cap, O* d) {
  const float inv = 1.0f / cap;
  int64_t i = 0;
#ifdef AM_LCE_VECTOR
  for (; i + kW <= n; i += kW) {
    const vf v = load(x + i), t = v * inv;
    store(d + i, vexp((v - m) - logsum) * s * (1.0f - t * t));
  }
#endif
  for (; i < n; ++i) store_one(d + i, exp_fast((x[i] - m) - logsum) * s * (1.0f - (x[i] * inv) * (x[i] * inv)));
}

double row_max(double* x, int64_t n, double cap) {
  double m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    if (cap > 0) x[i] = cap * std::tanh(x[i] / cap);
    m = std::max(m, x[i]);
  }
  return m;
}

// Loss (and, when want_grad, gradient) of each of the chunk's n rows of logits [n, V] (soft-capped in
// place), one row at a time while it sits in cache: max, exp-sum (storing exp when the gradient needs it)
// and gradient. The gradient overwrites its row: row r of O values starts where logits row r does, so
// rows lie ld_o = V * sizeof(C) / sizeof(O) elements apart, and writing element v (bytes from
// v * sizeof(O)) never reaches a value not yet read (bytes from v * sizeof(C)).
template <class O>
void chunk_rows(float* logits, int64_t n, int64_t V, const int64_t* labels, float cap, float s, bool want_grad,
                double* loss) {
  const int64_t ld_o = V * int64_t(sizeof(float) / sizeof(O));
  parallel_for(n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* x = logits + r * V;
      const int64_t label = labels[r];
      const float m = row_max(x, V, cap);
      const float z = x[label];
      const bool from_exp = want_grad && !(cap > 0);
      const double sum = from_exp ? row_sum_exp<true>(x, V, m) : row_sum_exp<false>(x, V, m);
      // max and logsum are kept apart so that (z - max) - logsum stays exact for large logits.
      const float logsum = float(std::log(sum));
      loss[r] = double(logsum) - (double(z) - double(m));
      if (!want_grad) continue;
      O* d = reinterpret_cast<O*>(logits) + r * ld_o;
      float g = (exp_fast((z - m) - logsum) - 1.0f) * s;
      if (from_exp) {
        row_grad_from_exp(x, V, float(double(s) / sum), d);
      } else {
        row_grad_softcap(x, V, m, logsum, s, cap, d);
        g *= 1.0f - (z / cap) * (z / cap);
      }
      store_one(d + label, g);
    }
  });
}

template <class O>
void chunk_rows(double* logits, int64_t n, int64_t V, const int64_t* labels, double cap, double s, bool want_grad,
                double* loss) {
  static_assert(std::is_same_v<O, double>);
  parallel_for(n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      double* x = logits + r * V;
      const int64_t label = labels[r];
      const double m = row_max(x, V, cap), z = x[label];
      double sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(x[v] - m);
      const double logsum = std::log(sum);
      loss[r] = logsum - (z - m);
      if (!want_grad) continue;
      for (int64_t v = 0; v < V; ++v) {
        double g = std::exp((x[v] - m) - logsum) * s;
        if (v == label) g -= s;
        if (cap > 0) g *= 1.0 - (x[v] / cap) * (x[v] / cap);
        x[v] = g;
      }
    }
  });
}

// dweight[v, :] = bf16(dweight[v, :] + tile[v, :]) over `rows` rows of width `cols`.
void add_tile(const float* tile, int64_t rows, int64_t cols, bf16* dweight) {
  parallel_for(rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* t = tile + r * cols;
      bf16* d = dweight + r * cols;
      int64_t i = 0;
#ifdef AM_LCE_VECTOR
      for (; i + kW <= cols; i += kW) store(d + i, load(d + i) + load(t + i));
#endif
      for (; i < cols; ++i) d[i] = float_to_bf16(bf16_to_float(d[i]) + t[i]);
    }
  });
}

template <class T>
double run(const LinearCrossEntropyProblem& p, const T* hidden, const T* weight, const int64_t* labels, T* dhidden,
           T* dweight, void* workspace) {
  using C = compute_t<T>;
  constexpr bool kNarrow = !std::is_same_v<T, C>;
  const int64_t N = p.rows, H = p.hidden, V = p.vocab;
  const bool want_grad = dhidden != nullptr || dweight != nullptr;
  const Layout l = layout(p, sizeof(C), sizeof(T), want_grad);
  char* ws = static_cast<char*>(workspace);
  C* logits = reinterpret_cast<C*>(ws + l.logits);
  // The gradient the GEMMs read: the logits buffer, overwritten in place (rows ld_d elements apart).
  const T* dlogits = reinterpret_cast<const T*>(logits);
  const int64_t ld_d = V * int64_t(sizeof(C) / sizeof(T));
  float* tile = reinterpret_cast<float*>(ws + l.tile);
  T* grad_tile = reinterpret_cast<T*>(ws + l.grad_tile);
  float* dh32 = reinterpret_cast<float*>(ws + l.dhidden32);
  T* h_gather = reinterpret_cast<T*>(ws + l.hidden);
  T* dh_chunk = reinterpret_cast<T*>(ws + l.dhidden);
  int64_t* index = reinterpret_cast<int64_t*>(ws + l.index);
  int64_t* chunk_labels = reinterpret_cast<int64_t*>(ws + l.labels);
  double* loss = reinterpret_cast<double*>(ws + l.loss);

  int64_t valid = 0;
  for (int64_t r = 0; r < N; ++r) valid += labels[r] != p.ignore_index ? 1 : 0;
  // Equal chunks: a last chunk of a few rows would still cost a full pass over the weight.
  const int64_t chunks = (valid + p.chunk - 1) / p.chunk;
  const int64_t per_chunk = chunks > 0 ? (valid + chunks - 1) / chunks : 0;
  const C cap = C(p.softcap), s = C(p.grad_scale);
  double total = 0;
  bool dweight_written = p.accumulate_dweight;  // whether dweight holds values to add to
  int64_t next = 0;                             // first row not yet scanned
  while (next < N) {
    int64_t n = 0;
    for (; next < N && n < per_chunk; ++next) {
      if (labels[next] == p.ignore_index) {
        if (dhidden) std::memset(static_cast<void*>(dhidden + next * H), 0, size_t(H) * sizeof(T));
        continue;
      }
      index[n] = next;
      chunk_labels[n++] = labels[next];
    }
    if (n == 0) break;
    // Consecutive rows are read and written in place; others go through the gather buffers.
    const bool dense = index[n - 1] - index[0] == n - 1;
    const T* h = hidden + index[0] * H;
    if (!dense) {
      for (int64_t r = 0; r < n; ++r)
        std::memcpy(static_cast<void*>(h_gather + r * H), hidden + index[r] * H, size_t(H) * sizeof(T));
      h = h_gather;
    }
    gemm(false, true, n, V, H, C(1), h, H, weight, H, C(0), logits, V);
    chunk_rows<T>(logits, n, V, chunk_labels, cap, s, want_grad, loss);
    for (int64_t r = 0; r < n; ++r) total += loss[r];
    T* out = dense ? dhidden + index[0] * H : dh_chunk;
    // The backward GEMMs take the vocabulary a tile of tw columns at a time. In f32 / f64 that is all of it; in
    // bf16 each tile's gradient is first copied out of the logits' rows (2V apart) into rows of its own width:
    // oneDNN runs its AMX / brgemm kernels only on dense rows, and the copy stays in cache for both GEMMs.
    const int64_t tw = kNarrow ? grad_tile_columns(p) : V;
    for (int64_t v0 = 0; want_grad && v0 < V; v0 += tw) {
      const int64_t w = std::min(tw, V - v0);
      const T* g = dlogits + v0;
      int64_t ld = ld_d;
      if constexpr (kNarrow) {
        parallel_for(n, 16, [&](int64_t b, int64_t e) {
          for (int64_t r = b; r < e; ++r)
            std::memcpy(static_cast<void*>(grad_tile + r * w), g + r * ld_d, size_t(w) * sizeof(T));
        });
        g = grad_tile;
        ld = w;
      }
      if (dhidden) {
        // bf16 d(hidden) adds up the tiles in fp32 and is rounded once, below.
        if constexpr (kNarrow)
          gemm(false, false, n, H, w, 1.0f, g, ld, weight + v0 * H, H, v0 > 0 ? 1.0f : 0.0f, dh32, H);
        else
          gemm(false, false, n, H, w, C(1), g, ld, weight + v0 * H, H, C(0), out, H);
      }
      if (!dweight) continue;
      if (!dweight_written || !kNarrow) {
        // The first chunk writes d(weight) (unless accumulating); in f32 / f64 the BLAS adds the later ones
        // itself (beta = 1).
        gemm(true, false, w, H, n, C(1), g, ld, h, H, C(dweight_written ? 1 : 0), dweight + v0 * H, H);
      } else if constexpr (kNarrow) {
        // Later bf16 chunks: oneDNN's bf16 sum post-op (beta = 1) runs well below memory bandwidth, so the
        // tile's d(weight) goes to an fp32 tile in cache and is added here: one read and one write of
        // d(weight) per chunk, one rounding.
        gemm(true, false, w, H, n, 1.0f, g, ld, h, H, 0.0f, tile, H);
        add_tile(tile, w, H, dweight + v0 * H);
      }
    }
    if (dhidden) {
      if constexpr (kNarrow) cast(dh32, out, n * H);
      if (!dense)
        for (int64_t r = 0; r < n; ++r)
          std::memcpy(static_cast<void*>(dhidden + index[r] * H), dh_chunk + r * H, size_t(H) * sizeof(T));
    }
    if (dweight) dweight_written = true;
  }
  for (; next < N; ++next)  // ignored rows after the last label row
    if (dhidden) std::memset(static_cast<void*>(dhidden + next * H), 0, size_t(H) * sizeof(T));
  if (dweight && !dweight_written)  // no label rows: d(weight) is zero
    std::memset(static_cast<void*>(dweight), 0, size_t(V * H) * sizeof(T));
  return total;
}

}  // namespace

size_t linear_cross_entropy_workspace(const LinearCrossEntropyProblem& p, DType dtype, bool want_grad) {
  AM_CHECK(dtype == DType::f32 || dtype == DType::f64 || dtype == DType::bf16,
           "linear_cross_entropy: dtype must be f32, f64 or bf16, got ", dtype_name(dtype));
  const size_t storage = dtype_size(dtype), compute = dtype == DType::f64 ? 8 : 4;
  return layout(p, compute, storage, want_grad).total;
}

template <class T>
double linear_cross_entropy(const LinearCrossEntropyProblem& p, const T* hidden, const T* weight, const int64_t* labels,
                            T* dhidden, T* dweight, void* workspace) {
  AM_CHECK(p.rows >= 0 && p.hidden >= 0 && p.vocab > 0 && p.chunk >= 1, "linear_cross_entropy: bad sizes rows=", p.rows,
           " hidden=", p.hidden, " vocab=", p.vocab, " chunk=", p.chunk);
  return run(p, hidden, weight, labels, dhidden, dweight, workspace);
}

template double linear_cross_entropy<float>(const LinearCrossEntropyProblem&, const float*, const float*,
                                            const int64_t*, float*, float*, void*);
template double linear_cross_entropy<double>(const LinearCrossEntropyProblem&, const double*, const double*,
                                             const int64_t*, double*, double*, void*);
template double linear_cross_entropy<bf16>(const LinearCrossEntropyProblem&, const bf16*, const bf16*, const int64_t*,
                                           bf16*, bf16*, void*);

}  // namespace automodel::cpu
