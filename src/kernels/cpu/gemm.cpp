#include "kernels/cpu/gemm.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "core/threads.h"

namespace automodel::cpu {

namespace {

// ---------------------------------------------------------------------------------------------
// Shared edge cases: empty products and the bias prefill.

// C = beta * C (+ bias) when K == 0: the product is empty.
template <class T, class S>
void scale_only(int64_t M, int64_t N, S beta, T* C, int64_t ldc, const T* bias) {
  using Cm = compute_t<T>;
  for (int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    for (int64_t j = 0; j < N; ++j) {
      Cm v = beta == S(0) ? Cm(0) : Cm(beta) * to_compute(c[j]);
      if (bias) v += to_compute(bias[j]);
      c[j] = from_compute<T>(v);
    }
  }
}

template <class T>
void check_args(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool has_bias,
                double alpha, double beta) {
  AM_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size M=", M, " N=", N, " K=", K);
  AM_CHECK(!has_bias || (beta == 0 && alpha == 1), "gemm: bias needs alpha == 1 and beta == 0");
  if (M == 0 || N == 0) return;
  AM_CHECK(ldc >= N, "gemm: ldc=", ldc, " smaller than N=", N);
  if (K == 0) return;  // A and B are not read
  AM_CHECK(lda >= std::max<int64_t>(1, ta ? M : K), "gemm: lda=", lda, " too small for ", ta ? "A^T" : "A",
           " with M=", M, " K=", K);
  AM_CHECK(ldb >= std::max<int64_t>(1, tb ? K : N), "gemm: ldb=", ldb, " too small for ", tb ? "B^T" : "B",
           " with K=", K, " N=", N);
}

// ---------------------------------------------------------------------------------------------
// OpenBLAS (f64).

void blas_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
               const double* B, int64_t ldb, double beta, double* C, int64_t ldc, const double* bias) {
  check_args<double>(ta, tb, M, N, K, lda, ldb, ldc, bias != nullptr, alpha, beta);
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, beta, C, ldc, bias);
  if (bias) {
    for (int64_t i = 0; i < M; ++i) std::copy(bias, bias + N, C + i * ldc);
    beta = 1.0;
  }
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, blasint(M), blasint(N),
              blasint(K), alpha, A, blasint(lda), B, blasint(ldb), beta, C, blasint(ldc));
}

// Below this many multiply-adds per matrix, a batch runs one matrix per thread (when the whole
// batch is worth a parallel region).
constexpr int64_t kSmallGemm = int64_t(1) << 21;
constexpr int64_t kParallelBatchWork = int64_t(1) << 16;

void blas_gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                       const int64_t* a_off, int64_t lda, const double* B, const int64_t* b_off, int64_t ldb,
                       double beta, double* C, const int64_t* c_off, int64_t ldc, int64_t batch) {
  if (batch <= 0) return;
  check_args<double>(ta, tb, M, N, K, lda, ldb, ldc, false, alpha, beta);  // not inside the parallel loop
  if (batch > 1 && M * N * K < kSmallGemm && batch * M * N * K >= kParallelBatchWork && num_threads() > 1) {
    // OpenBLAS (OpenMP build) runs single-threaded inside a parallel region.
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < batch; ++i)
      blas_gemm(ta, tb, M, N, K, alpha, A + a_off[i], lda, B + b_off[i], ldb, beta, C + c_off[i], ldc, nullptr);
    return;
  }
  for (int64_t i = 0; i < batch; ++i)
    blas_gemm(ta, tb, M, N, K, alpha, A + a_off[i], lda, B + b_off[i], ldb, beta, C + c_off[i], ldc, nullptr);
}

// ---------------------------------------------------------------------------------------------
// oneDNN (f32, or bf16 inputs with fp32 accumulation). f32 goes here rather than to OpenBLAS because oneDNN picks its
// kernels by ISA features while OpenBLAS 0.3.21 (Debian 12) picks them by CPU model and falls back to its SSE3
// kernels on CPUs newer than it (a 4-5x slower sgemm on a Xeon of family 6 model 207).

using dt = dnnl::memory::data_type;

struct DnnlEntry {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};

struct Dnnl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::mutex mu;
  // Key: shape, strides, flags, output dtype, alpha/beta bits and thread count -> primitive.
  std::map<std::vector<int64_t>, std::shared_ptr<DnnlEntry>> cache;
};

Dnnl& dnnl_state() {
  static Dnnl* state = new Dnnl();  // never destroyed: primitives may outlive static destruction order
  return *state;
}

// One matmul problem in oneDNN terms: batch dims (1 = broadcast) and element strides.
struct DnnlProblem {
  int64_t batch_a = 1, batch_b = 1, batch = 1;
  int64_t M, N, K;
  int64_t sa[3], sb[3], sc[3];  // batch, row, column strides of op(A) [M,K], op(B) [K,N], C [M,N]
  dt in, out;                   // A, B and bias share `in`
  bool has_bias;
  float alpha, beta;
};

std::shared_ptr<DnnlEntry> get_primitive(const DnnlProblem& p) {
  Dnnl& st = dnnl_state();
  std::vector<int64_t> key = {p.batch_a,
                              p.batch_b,
                              p.batch,
                              p.M,
                              p.N,
                              p.K,
                              p.sa[0],
                              p.sa[1],
                              p.sa[2],
                              p.sb[0],
                              p.sb[1],
                              p.sb[2],
                              p.sc[0],
                              p.sc[1],
                              p.sc[2],
                              int64_t(p.in),
                              int64_t(p.out),
                              p.has_bias,
                              std::bit_cast<int32_t>(p.alpha),
                              std::bit_cast<int32_t>(p.beta),
                              omp_get_max_threads()};
  {
    std::lock_guard<std::mutex> lock(st.mu);
    auto it = st.cache.find(key);
    if (it != st.cache.end()) return it->second;
  }
  using dims = dnnl::memory::dims;
  dnnl::memory::desc a_md(dims{p.batch_a, p.M, p.K}, p.in, dims{p.sa[0], p.sa[1], p.sa[2]});
  dnnl::memory::desc b_md(dims{p.batch_b, p.K, p.N}, p.in, dims{p.sb[0], p.sb[1], p.sb[2]});
  dnnl::memory::desc c_md(dims{p.batch, p.M, p.N}, p.out, dims{p.sc[0], p.sc[1], p.sc[2]});
  dnnl::primitive_attr attr;
  // Scratch memory comes from the calling thread (run_dnnl), so concurrent calls never share it.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (p.alpha != 1.0f) attr.set_output_scales(0, {p.alpha});
  if (p.beta != 0.0f) {
    dnnl::post_ops po;
    po.append_sum(p.beta);
    attr.set_post_ops(po);
  }
  auto entry = std::make_shared<DnnlEntry>();
  if (p.has_bias) {
    dnnl::memory::desc bias_md(dims{1, 1, p.N}, p.in, dims{p.N, p.N, 1});
    entry->pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_md, b_md, bias_md, c_md), attr, st.engine);
  } else {
    entry->pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_md, b_md, c_md), attr, st.engine);
  }
  entry->prim = dnnl::matmul(entry->pd);
  std::lock_guard<std::mutex> lock(st.mu);
  if (st.cache.size() >= 4096) st.cache.clear();  // shapes churn (e.g. varying sequence lengths)
  return st.cache.emplace(key, entry).first->second;
}

// Fills the strides of op(X) for a stored X: op(X) row r, column c is at X[r * ld + c] or, when
// transposed, X[c * ld + r].
void op_strides(bool t, int64_t ld, int64_t batch_stride, int64_t* s) {
  s[0] = batch_stride;
  s[1] = t ? 1 : ld;
  s[2] = t ? ld : 1;
}

void run_dnnl(const DnnlProblem& p, const void* A, const void* B, void* C, const void* bias) {
  Dnnl& st = dnnl_state();
  std::shared_ptr<DnnlEntry> e = get_primitive(p);
  const dnnl::matmul::primitive_desc& pd = e->pd;
  thread_local std::vector<char> scratch;
  const dnnl::memory::desc scratch_md = pd.scratchpad_desc();
  if (scratch.size() < scratch_md.get_size()) scratch.resize(scratch_md.get_size());
  std::unordered_map<int, dnnl::memory> args = {
      {DNNL_ARG_SRC, dnnl::memory(pd.src_desc(), st.engine, const_cast<void*>(A))},
      {DNNL_ARG_WEIGHTS, dnnl::memory(pd.weights_desc(), st.engine, const_cast<void*>(B))},
      {DNNL_ARG_DST, dnnl::memory(pd.dst_desc(), st.engine, C)},
      {DNNL_ARG_SCRATCHPAD, dnnl::memory(scratch_md, st.engine, scratch.data())}};
  if (bias) args.insert({DNNL_ARG_BIAS, dnnl::memory(pd.bias_desc(), st.engine, const_cast<void*>(bias))});
  e->prim.execute(st.stream, args);
  st.stream.wait();
}

template <class T>
constexpr dt dnnl_type() {
  return std::is_same_v<T, bf16> ? dt::bf16 : dt::f32;
}

template <class InT, class OutT>
void dnnl_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const InT* A, int64_t lda, const InT* B,
               int64_t ldb, float beta, OutT* C, int64_t ldc, const InT* bias) {
  check_args<InT>(ta, tb, M, N, K, lda, ldb, ldc, bias != nullptr, alpha, beta);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if constexpr (std::is_same_v<InT, OutT>) {
      scale_only(M, N, beta, C, ldc, bias);
    } else {
      std::vector<float> fb;
      if (bias)
        for (int64_t j = 0; j < N; ++j) fb.push_back(bf16_to_float(bias[j]));
      scale_only(M, N, beta, C, ldc, bias ? fb.data() : nullptr);
    }
    return;
  }
  DnnlProblem p;
  p.M = M, p.N = N, p.K = K;
  op_strides(ta, lda, M * K, p.sa);
  op_strides(tb, ldb, K * N, p.sb);
  op_strides(false, ldc, M * ldc, p.sc);
  p.in = dnnl_type<InT>(), p.out = dnnl_type<OutT>();
  p.has_bias = bias != nullptr;
  p.alpha = alpha, p.beta = beta;
  run_dnnl(p, A, B, C, bias);
}

// Stride of an arithmetic progression off[0], off[0] + s, ...; false when the offsets are not one.
bool progression(const int64_t* off, int64_t n, int64_t* stride) {
  *stride = n > 1 ? off[1] - off[0] : 0;
  for (int64_t i = 2; i < n; ++i)
    if (off[i] - off[i - 1] != *stride) return false;
  return true;
}

template <class InT, class OutT>
void dnnl_gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const InT* A,
                       const int64_t* a_off, int64_t lda, const InT* B, const int64_t* b_off, int64_t ldb, float beta,
                       OutT* C, const int64_t* c_off, int64_t ldc, int64_t batch) {
  if (batch <= 0) return;
  int64_t sa, sb, sc;
  if (batch > 1 && M > 0 && N > 0 && K > 0 && progression(a_off, batch, &sa) && progression(b_off, batch, &sb) &&
      progression(c_off, batch, &sc) && sa >= 0 && sb >= 0 && sc > 0) {
    check_args<InT>(ta, tb, M, N, K, lda, ldb, ldc, false, alpha, beta);
    DnnlProblem p;
    p.M = M, p.N = N, p.K = K;
    p.batch = batch;
    p.batch_a = sa == 0 ? 1 : batch;
    p.batch_b = sb == 0 ? 1 : batch;
    op_strides(ta, lda, sa == 0 ? M * K : sa, p.sa);
    op_strides(tb, ldb, sb == 0 ? K * N : sb, p.sb);
    op_strides(false, ldc, sc, p.sc);
    p.in = dnnl_type<InT>(), p.out = dnnl_type<OutT>();
    p.has_bias = false;
    p.alpha = alpha, p.beta = beta;
    bool ok = true;
    try {
      get_primitive(p);
    } catch (const dnnl::error&) {
      ok = false;  // layout oneDNN does not take as one batched matmul: fall back to a loop
    }
    if (ok) return run_dnnl(p, A + a_off[0], B + b_off[0], C + c_off[0], nullptr);
  }
  for (int64_t i = 0; i < batch; ++i)
    dnnl_gemm(ta, tb, M, N, K, alpha, A + a_off[i], lda, B + b_off[i], ldb, beta, C + c_off[i], ldc,
              static_cast<const InT*>(nullptr));
}

template <class T, class A>
void column_sums_impl(const T* x, int64_t rows, int64_t cols, int64_t ld, T* out, bool accumulate) {
  constexpr int64_t kBlock = 512;
  const int64_t nblocks = (cols + kBlock - 1) / kBlock;
  const int64_t nt = num_threads();
  if (nblocks >= nt || rows < 64 || nt == 1) {
    parallel_for(nblocks, rows * kBlock >= (1 << 15) ? 0 : 1 << 30, [&](int64_t b0, int64_t b1) {
      A acc[kBlock];
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t c0 = b * kBlock, w = std::min(kBlock, cols - c0);
        for (int64_t j = 0; j < w; ++j) acc[j] = accumulate ? A(to_compute(out[c0 + j])) : A(0);
        for (int64_t r = 0; r < rows; ++r) {
          const T* xr = x + r * ld + c0;
          for (int64_t j = 0; j < w; ++j) acc[j] += A(to_compute(xr[j]));
        }
        for (int64_t j = 0; j < w; ++j) out[c0 + j] = from_compute<T>(acc[j]);
      }
    });
    return;
  }
  // Few columns, many rows: each thread sums a band of rows, then the partials are added.
  std::vector<A> partial(size_t(nt * cols), A(0));
  const int64_t band = (rows + nt - 1) / nt;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < nt; ++t) {
    A* acc = partial.data() + t * cols;
    for (int64_t r = t * band; r < std::min(rows, (t + 1) * band); ++r) {
      const T* xr = x + r * ld;
      for (int64_t j = 0; j < cols; ++j) acc[j] += A(to_compute(xr[j]));
    }
  }
  for (int64_t j = 0; j < cols; ++j) {
    A s = accumulate ? A(to_compute(out[j])) : A(0);
    for (int64_t t = 0; t < nt; ++t) s += partial[size_t(t * cols + j)];
    out[j] = from_compute<T>(s);
  }
}

}  // namespace

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc, const float* bias) {
  dnnl_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias);
}
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc, const double* bias) {
  blas_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias);
}
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, int64_t lda, const bf16* B,
          int64_t ldb, float beta, float* C, int64_t ldc, const bf16* bias) {
  dnnl_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias);
}
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, int64_t lda, const bf16* B,
          int64_t ldb, float beta, bf16* C, int64_t ldc, const bf16* bias) {
  dnnl_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias);
}

void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, const int64_t* a_off,
                  int64_t lda, const float* B, const int64_t* b_off, int64_t ldb, float beta, float* C,
                  const int64_t* c_off, int64_t ldc, int64_t batch) {
  dnnl_gemm_batched(ta, tb, M, N, K, alpha, A, a_off, lda, B, b_off, ldb, beta, C, c_off, ldc, batch);
}
void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                  const int64_t* a_off, int64_t lda, const double* B, const int64_t* b_off, int64_t ldb, double beta,
                  double* C, const int64_t* c_off, int64_t ldc, int64_t batch) {
  blas_gemm_batched(ta, tb, M, N, K, alpha, A, a_off, lda, B, b_off, ldb, beta, C, c_off, ldc, batch);
}
void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, const int64_t* a_off,
                  int64_t lda, const bf16* B, const int64_t* b_off, int64_t ldb, float beta, float* C,
                  const int64_t* c_off, int64_t ldc, int64_t batch) {
  dnnl_gemm_batched(ta, tb, M, N, K, alpha, A, a_off, lda, B, b_off, ldb, beta, C, c_off, ldc, batch);
}
void gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bf16* A, const int64_t* a_off,
                  int64_t lda, const bf16* B, const int64_t* b_off, int64_t ldb, float beta, bf16* C,
                  const int64_t* c_off, int64_t ldc, int64_t batch) {
  dnnl_gemm_batched(ta, tb, M, N, K, alpha, A, a_off, lda, B, b_off, ldb, beta, C, c_off, ldc, batch);
}

void column_sums(const float* x, int64_t rows, int64_t cols, int64_t ld, float* out, bool accumulate) {
  column_sums_impl<float, float>(x, rows, cols, ld, out, accumulate);
}
void column_sums(const double* x, int64_t rows, int64_t cols, int64_t ld, double* out, bool accumulate) {
  column_sums_impl<double, double>(x, rows, cols, ld, out, accumulate);
}
void column_sums(const bf16* x, int64_t rows, int64_t cols, int64_t ld, bf16* out, bool accumulate) {
  column_sums_impl<bf16, float>(x, rows, cols, ld, out, accumulate);
}

int64_t gemm_primitive_cache_size() {
  Dnnl& st = dnnl_state();
  std::lock_guard<std::mutex> lock(st.mu);
  return int64_t(st.cache.size());
}

}  // namespace automodel::cpu
