#include "kernels/cpu/lora_linear.h"

#include <type_traits>
#include <vector>

#include "core/threads.h"
#include "kernels/cpu/cast.h"
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/low_rank.h"

namespace automodel::cpu {

namespace {

template <class T>
using scalar_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

bool active(const LoraDropout& drop) { return drop.p > 0; }

// y[i] += v[i] over n elements.
template <class T>
void add_into(T* y, const T* v, int64_t n) {
  parallel_for(n, 4096, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) y[i] = from_compute<T>(to_compute(y[i]) + to_compute(v[i]));
  });
}

// C [M, N] = X [M, K] @ op(W) (+ bias) with X of the activations' type T and W of the base's type
// TW. A bf16 base under f32 activations rounds X to bf16 first: the oneDNN bf16 path, fp32
// accumulation into the f32 C.
template <class T, class TW>
void base_gemm(bool tb, int64_t M, int64_t N, int64_t K, const T* X, int64_t ldx, const TW* W, int64_t ldw, T* C,
               int64_t ldc, const TW* bias) {
  using S = scalar_t<T>;
  if constexpr (std::is_same_v<T, TW>) {
    gemm(false, tb, M, N, K, S(1), X, ldx, W, ldw, S(0), C, ldc, bias);
  } else {
    static_assert(std::is_same_v<T, float> && std::is_same_v<TW, bf16>);
    std::vector<bf16> xb(static_cast<size_t>(M * K));
    for (int64_t i = 0; i < M; ++i) cast(X + i * ldx, xb.data() + i * K, K);
    gemm(false, tb, M, N, K, 1.0f, xb.data(), K, W, ldw, 0.0f, C, ldc, bias);
  }
}

// The adapter's rank-side products: the low-rank kernels for f32 / bf16 at small ranks, else GEMMs.
// C [M, N] = beta C + alpha U V with U [M, r] and V [r, N], or V given as its transpose [N, r] (vt).
template <class T>
void rank_expand(int64_t M, int64_t N, int64_t r, double alpha, const T* U, const T* V, bool vt, double beta, T* C) {
  if constexpr (!std::is_same_v<T, double>)
    if (r <= kLowRankMax)
      return low_rank_expand(M, N, r, float(alpha), U, r, V, vt ? 1 : N, vt ? r : 1, float(beta), C, N);
  using S = scalar_t<T>;
  gemm(false, vt, M, N, r, S(alpha), U, r, V, vt ? r : N, S(beta), C, N);
}
// D [r, N] = alpha U^T X, or stored as its transpose [N, r] (dt), with U [M, r] and X [M, N].
template <class T>
void rank_reduce(int64_t M, int64_t N, int64_t r, double alpha, const T* U, const T* X, bool dt, T* D) {
  if constexpr (!std::is_same_v<T, double>)
    if (r <= kLowRankMax) return low_rank_reduce(M, N, r, float(alpha), U, r, X, N, D, dt ? 1 : N, dt ? r : 1);
  using S = scalar_t<T>;
  if (dt)
    gemm(true, false, N, r, M, S(alpha), X, N, U, r, S(0), D, r);
  else
    gemm(true, false, r, N, M, S(alpha), U, r, X, N, S(0), D, N);
}

template <class T, class TW>
void forward(const T* x, const TW* w, const TW* bias, const T* a, const T* b, const LoraDims& d, double scale,
             const LoraDropout& drop, T* u, T* y) {
  using S = scalar_t<T>;
  const auto [rows, in, out, r] = d;
  base_gemm<T, TW>(true, rows, out, in, x, in, w, in, y, out, bias);
  const T* xl = x;
  std::vector<T> xd;
  if (active(drop) && !drop.post) {
    xd.resize(static_cast<size_t>(rows * in));
    dropout_forward(x, xd.data(), rows * in, drop.p, drop.seed, drop.first_block);
    xl = xd.data();
  }
  gemm(false, true, rows, r, in, S(1), xl, in, a, in, S(0), u, r);  // u = drop(x) A^T
  if (active(drop) && drop.post) {
    std::vector<T> v(static_cast<size_t>(rows * out));
    rank_expand(rows, out, r, scale, u, b, true, 0.0, v.data());
    dropout_forward(v.data(), v.data(), rows * out, drop.p, drop.seed, drop.first_block);
    add_into(y, v.data(), rows * out);
  } else {
    rank_expand(rows, out, r, scale, u, b, true, 1.0, y);  // y += scale * u B^T
  }
}

template <class T, class TW>
void backward(const T* g, const T* x, const TW* w, const T* a, const T* b, const T* u, const LoraDims& d, double scale,
              const LoraDropout& drop, T* dx, T* da, T* db, T* dw, T* dbias) {
  using S = scalar_t<T>;
  const auto [rows, in, out, r] = d;
  // The gradient reaching the branch's B output: post dropout masks it.
  const T* gl = g;
  std::vector<T> gd;
  if (active(drop) && drop.post) {
    gd.resize(static_cast<size_t>(rows * out));
    dropout_backward(g, gd.data(), rows * out, drop.p, drop.seed, drop.first_block);
    gl = gd.data();
  }
  if (db) rank_reduce(rows, out, r, scale, u, gl, true, db);  // dB = scale g^T u
  std::vector<T> gu;
  if (da || dx) {  // gu [rows, r] = scale g B
    gu.resize(static_cast<size_t>(rows * r));
    gemm(false, false, rows, r, out, S(scale), gl, out, b, r, S(0), gu.data(), r);
  }
  const bool pre = active(drop) && !drop.post;
  if (da) {  // dA = gu^T drop(x), the mask regenerated from the Philox counter
    const T* xl = x;
    std::vector<T> xd;
    if (pre) {
      xd.resize(static_cast<size_t>(rows * in));
      dropout_forward(x, xd.data(), rows * in, drop.p, drop.seed, drop.first_block);
      xl = xd.data();
    }
    rank_reduce(rows, in, r, 1.0, gu.data(), xl, false, da);
  }
  if (dx) {  // dx = g W + drop'(gu A)
    if constexpr (std::is_same_v<T, TW>) {
      gemm(false, false, rows, in, out, S(1), g, out, w, in, S(0), dx, in);
    } else {
      base_gemm<T, TW>(false, rows, in, out, g, out, w, in, dx, in, nullptr);
    }
    if (pre) {
      std::vector<T> t(static_cast<size_t>(rows * in));
      rank_expand(rows, in, r, 1.0, gu.data(), a, false, 0.0, t.data());
      dropout_backward(t.data(), t.data(), rows * in, drop.p, drop.seed, drop.first_block);
      add_into(dx, t.data(), rows * in);
    } else {
      rank_expand(rows, in, r, 1.0, gu.data(), a, false, 1.0, dx);
    }
  }
  if constexpr (std::is_same_v<T, TW>) {
    if (dw) gemm(true, false, out, in, rows, S(1), g, out, x, in, S(0), dw, in);  // dW = g^T x
    if (dbias) {
      if (rows == 0) {
        for (int64_t j = 0; j < out; ++j) dbias[j] = from_compute<T>(0.0f);
      } else {
        column_sums(g, rows, out, out, dbias);
      }
    }
  } else {
    (void)dw, (void)dbias;
  }
}

}  // namespace

void lora_linear_forward(const float* x, const float* w, const float* bias, const float* a, const float* b,
                         const LoraDims& d, double scale, const LoraDropout& drop, float* u, float* y) {
  forward(x, w, bias, a, b, d, scale, drop, u, y);
}
void lora_linear_forward(const double* x, const double* w, const double* bias, const double* a, const double* b,
                         const LoraDims& d, double scale, const LoraDropout& drop, double* u, double* y) {
  forward(x, w, bias, a, b, d, scale, drop, u, y);
}
void lora_linear_forward(const bf16* x, const bf16* w, const bf16* bias, const bf16* a, const bf16* b,
                         const LoraDims& d, double scale, const LoraDropout& drop, bf16* u, bf16* y) {
  forward(x, w, bias, a, b, d, scale, drop, u, y);
}
void lora_linear_forward(const float* x, const bf16* w, const bf16* bias, const float* a, const float* b,
                         const LoraDims& d, double scale, const LoraDropout& drop, float* u, float* y) {
  forward(x, w, bias, a, b, d, scale, drop, u, y);
}

void lora_linear_backward(const float* g, const float* x, const float* w, const float* a, const float* b,
                          const float* u, const LoraDims& d, double scale, const LoraDropout& drop, float* dx,
                          float* da, float* db, float* dw, float* dbias) {
  backward(g, x, w, a, b, u, d, scale, drop, dx, da, db, dw, dbias);
}
void lora_linear_backward(const double* g, const double* x, const double* w, const double* a, const double* b,
                          const double* u, const LoraDims& d, double scale, const LoraDropout& drop, double* dx,
                          double* da, double* db, double* dw, double* dbias) {
  backward(g, x, w, a, b, u, d, scale, drop, dx, da, db, dw, dbias);
}
void lora_linear_backward(const bf16* g, const bf16* x, const bf16* w, const bf16* a, const bf16* b, const bf16* u,
                          const LoraDims& d, double scale, const LoraDropout& drop, bf16* dx, bf16* da, bf16* db,
                          bf16* dw, bf16* dbias) {
  backward(g, x, w, a, b, u, d, scale, drop, dx, da, db, dw, dbias);
}
void lora_linear_backward(const float* g, const float* x, const bf16* w, const float* a, const float* b, const float* u,
                          const LoraDims& d, double scale, const LoraDropout& drop, float* dx, float* da, float* db) {
  backward<float, bf16>(g, x, w, a, b, u, d, scale, drop, dx, da, db, nullptr, nullptr);
}

}  // namespace automodel::cpu
