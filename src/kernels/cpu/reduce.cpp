#include "kernels/cpu/reduce.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/threads.h"

namespace automodel::cpu {

namespace {

constexpr int64_t kGrain = 1 << 15;  // elements below which a loop stays serial
constexpr int kLanes = 32;           // partial sums per contiguous run
constexpr int64_t kBlock = 1 << 16;  // contiguous elements one task sums
constexpr int64_t kCols = 8192;      // columns one task sums in a column reduction (rows read in order)

// Runs of adjacent dims that are all reduced or all kept (size-1 dims dropped).
struct Group {
  int64_t size;
  bool reduced;
};

std::vector<Group> make_groups(const int64_t* shape, int ndim, const uint8_t* reduce) {
  std::vector<Group> gs;
  for (int d = 0; d < ndim; ++d) {
    if (shape[d] == 1) continue;
    bool r = reduce[d] != 0;
    if (!gs.empty() && gs.back().reduced == r)
      gs.back().size *= shape[d];
    else
      gs.push_back({shape[d], r});
  }
  return gs;
}

template <class Out>
inline void store(Out* o, double v) {
  *o = from_compute<Out>(v);
}

// Sum of n contiguous values: kLanes independent partial sums, in double for double input; for
// float / bf16 input in float over blocks of kFloatBlock values (16 per lane) added into double.
template <class In>
double sum_run(const In* x, int64_t n) {
  double acc[kLanes] = {};
  int64_t i = 0;
  if constexpr (std::is_same_v<In, double>) {
    for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
      for (int j = 0; j < kLanes; ++j) acc[j] += x[i + j];
    }
  } else {
    constexpr int64_t kFloatBlock = 16 * kLanes;
    for (; i + kFloatBlock <= n; i += kFloatBlock) {
      float facc[kLanes] = {};
      for (int64_t k = i; k < i + kFloatBlock; k += kLanes) {
#pragma omp simd
        for (int j = 0; j < kLanes; ++j) facc[j] += to_compute(x[k + j]);
      }
      for (int j = 0; j < kLanes; ++j) acc[j] += double(facc[j]);
    }
  }
  double s = 0;
  for (; i < n; ++i) s += double(to_compute(x[i]));
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

// acc[0..width) = sum over r < rows of x[r * stride + j]: in double, or for float / bf16 input in
// float over groups of 16 rows added into double (fbuf: width floats of scratch).
template <class In>
void column_sum(const In* x, int64_t rows, int64_t stride, int64_t width, double* acc, float* fbuf) {
  for (int64_t j = 0; j < width; ++j) acc[j] = 0;
  if constexpr (std::is_same_v<In, double>) {
    for (int64_t r = 0; r < rows; ++r) {
      const In* p = x + r * stride;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) acc[j] += p[j];
    }
  } else {
    for (int64_t r0 = 0; r0 < rows; r0 += 16) {
      const int64_t r1 = std::min(rows, r0 + 16);
      const In* p0 = x + r0 * stride;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) fbuf[j] = to_compute(p0[j]);
      int64_t r = r0 + 1;
      for (; r + 4 <= r1; r += 4) {  // four rows per pass: a quarter of the scratch loads / stores
        const In* p = x + r * stride;
        const In* q = p + stride;
        const In* u = q + stride;
        const In* v = u + stride;
#pragma omp simd
        for (int64_t j = 0; j < width; ++j)
          fbuf[j] += (to_compute(p[j]) + to_compute(q[j])) + (to_compute(u[j]) + to_compute(v[j]));
      }
      for (; r < r1; ++r) {
        const In* p = x + r * stride;
#pragma omp simd
        for (int64_t j = 0; j < width; ++j) fbuf[j] += to_compute(p[j]);
      }
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) acc[j] += double(fbuf[j]);
    }
  }
}

// out[a, b] = scale * sum_r x[a, r, b] for contiguous x of shape [A, R, B].
template <class In, class Out>
void reduce_arb(const In* x, int64_t A, int64_t R, int64_t B, Out* out, double scale) {
  if (B == 1) {
    const int64_t nblk = (R + kBlock - 1) / kBlock;
    if (nblk <= 1) {
      parallel_for(A, std::max<int64_t>(1, kGrain / std::max<int64_t>(R, 1)), [&](int64_t begin, int64_t end) {
        for (int64_t a = begin; a < end; ++a) store(out + a, sum_run(x + a * R, R) * scale);
      });
      return;
    }
    // Long runs: fixed blocks summed in parallel, then added in order (independent of the thread count).
    std::vector<double> part(static_cast<size_t>(A * nblk));
    parallel_for(A * nblk, 1, [&](int64_t begin, int64_t end) {
      for (int64_t it = begin; it < end; ++it) {
        int64_t a = it / nblk, k = it % nblk;
        part[size_t(it)] = sum_run(x + a * R + k * kBlock, std::min(kBlock, R - k * kBlock));
      }
    });
    for (int64_t a = 0; a < A; ++a) {
      double s = 0;
      for (int64_t k = 0; k < nblk; ++k) s += part[size_t(a * nblk + k)];
      store(out + a, s * scale);
    }
    return;
  }
  const int64_t nbc = (B + kCols - 1) / kCols;
  const int64_t items = A * nbc;
  const int64_t nt = num_threads();
  // Few outputs and many rows: split the rows too, into partial sums added afterwards.
  int64_t nrb = 1;
  if (items < 4 * nt && R >= 128) nrb = std::min((R + 63) / 64, (4 * nt + items - 1) / items);
  const int64_t rows_per = (R + nrb - 1) / nrb;
  std::vector<double> part(nrb > 1 ? size_t(nrb * A * B) : 0);
  const int64_t work = R * std::min(B, kCols) / nrb;
  parallel_for(items * nrb, std::max<int64_t>(1, kGrain / std::max<int64_t>(work, 1)), [&](int64_t begin, int64_t end) {
    std::vector<double> accv(static_cast<size_t>(std::min(B, kCols)));
    std::vector<float> fbuf(static_cast<size_t>(std::min(B, kCols)));
    double* acc = accv.data();
    for (int64_t it = begin; it < end; ++it) {
      int64_t k = it / items, a = (it % items) / nbc, c = it % nbc;
      int64_t r0 = k * rows_per, r1 = std::min(R, r0 + rows_per);
      int64_t b0 = c * kCols, width = std::min(kCols, B - b0);
      column_sum(x + (a * R + r0) * B + b0, std::max<int64_t>(r1 - r0, 0), B, width, acc, fbuf.data());
      if (nrb == 1) {
        for (int64_t j = 0; j < width; ++j) store(out + a * B + b0 + j, acc[j] * scale);
      } else {
        double* p = part.data() + (k * A + a) * B + b0;
        for (int64_t j = 0; j < width; ++j) p[j] = acc[j];
      }
    }
  });
  if (nrb > 1) {
    for (int64_t i = 0; i < A * B; ++i) {
      double s = 0;
      for (int64_t k = 0; k < nrb; ++k) s += part[size_t(k * A * B + i)];
      store(out + i, s * scale);
    }
  }
}

// A, R, B of the first reduced group in gs.
void split_at_first_reduced(const std::vector<Group>& gs, size_t& g, int64_t& A, int64_t& R, int64_t& B) {
  g = 0;
  while (!gs[g].reduced) ++g;
  A = 1;
  B = 1;
  for (size_t i = 0; i < g; ++i) A *= gs[i].size;
  R = gs[g].size;
  for (size_t i = g + 1; i < gs.size(); ++i) B *= gs[i].size;
}

template <class T>
void sum_impl(const T* x, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, T* out) {
  int64_t total = 1, kept = 1;
  for (int d = 0; d < ndim; ++d) {
    total *= shape[d];
    if (!reduce[d]) kept *= shape[d];
  }
  if (kept == 0) return;
  if (total == 0) {  // empty sums: 0 (mean: 0 * inf = nan, as torch)
    for (int64_t i = 0; i < kept; ++i) store(out + i, 0.0 * scale);
    return;
  }
  std::vector<Group> gs = make_groups(shape, ndim, reduce);
  int nr = 0;
  for (const Group& g : gs) nr += g.reduced;
  if (nr == 0) {
    reduce_arb<T, T>(x, total, 1, 1, out, scale);
    return;
  }
  size_t g;
  int64_t A, R, B;
  split_at_first_reduced(gs, g, A, R, B);
  if (nr == 1) {
    reduce_arb<T, T>(x, A, R, B, out, scale);
    return;
  }
  // Several separate reduced groups: one pass per group, intermediates in double.
  std::vector<double> cur(static_cast<size_t>(A * B)), next;
  reduce_arb<T, double>(x, A, R, B, cur.data(), 1.0);
  gs.erase(gs.begin() + std::ptrdiff_t(g));
  for (int left = nr - 1; left > 0; --left) {
    split_at_first_reduced(gs, g, A, R, B);
    if (left == 1) {
      reduce_arb<double, T>(cur.data(), A, R, B, out, scale);
    } else {
      next.assign(size_t(A * B), 0.0);
      reduce_arb<double, double>(cur.data(), A, R, B, next.data(), 1.0);
      cur.swap(next);
    }
    gs.erase(gs.begin() + std::ptrdiff_t(g));
  }
}

template <class T>
void sum_backward_impl(const T* g, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, T* gx) {
  using C = compute_t<T>;
  int64_t total = 1;
  for (int d = 0; d < ndim; ++d) total *= shape[d];
  if (total == 0) return;
  std::vector<Group> gs = make_groups(shape, ndim, reduce);
  if (gs.empty()) gs.push_back({1, false});
  const size_t n = gs.size();
  std::vector<int64_t> gst(n);  // stride of each group in g (0 on reduced groups)
  int64_t s = 1;
  for (size_t i = n; i-- > 0;) {
    gst[i] = gs[i].reduced ? 0 : s;
    if (!gs[i].reduced) s *= gs[i].size;
  }
  const int64_t inner = gs.back().size, inner_st = gst.back();
  const C f = C(scale);
  parallel_for(total, kGrain, [&](int64_t begin, int64_t end) {
    int64_t pos = begin;
    while (pos < end) {
      int64_t row = pos / inner, j = pos % inner, count = std::min(inner - j, end - pos);
      int64_t off = j * inner_st;
      for (size_t i = n - 1; i-- > 0;) {
        off += (row % gs[i].size) * gst[i];
        row /= gs[i].size;
      }
      T* o = gx + pos;
      if (inner_st == 0) {
        const T v = from_compute<T>(to_compute(g[off]) * f);
        for (int64_t k = 0; k < count; ++k) o[k] = v;
      } else {
        const T* p = g + off;
#pragma omp simd
        for (int64_t k = 0; k < count; ++k) o[k] = from_compute<T>(to_compute(p[k]) * f);
      }
      pos += count;
    }
  });
}

}  // namespace

void sum_forward(const float* x, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, float* out) {
  sum_impl(x, shape, ndim, reduce, scale, out);
}
void sum_forward(const double* x, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, double* out) {
  sum_impl(x, shape, ndim, reduce, scale, out);
}
void sum_forward(const bf16* x, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, bf16* out) {
  sum_impl(x, shape, ndim, reduce, scale, out);
}

void sum_backward(const float* g, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, float* gx) {
  sum_backward_impl(g, shape, ndim, reduce, scale, gx);
}
void sum_backward(const double* g, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, double* gx) {
  sum_backward_impl(g, shape, ndim, reduce, scale, gx);
}
void sum_backward(const bf16* g, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, bf16* gx) {
  sum_backward_impl(g, shape, ndim, reduce, scale, gx);
}

}  // namespace automodel::cpu
