// The CPU backend table: each entry turns kernels/backend.h's type-erased call (pointers and DTypes) into the typed
// kernel of kernels/cpu/<file>.h, unchanged. An element type an entry has no kernel for is an Error naming both (the
// ops check dtypes first, so users meet the op's message).
#include "kernels/backend.h"

#include <type_traits>

#include "core/error.h"
#include "kernels/cpu/accumulate.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/adamw8bit.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/binary.h"
#include "kernels/cpu/cast.h"
#include "kernels/cpu/clamped_swiglu.h"
#include "kernels/cpu/concat.h"
#include "kernels/cpu/copy.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/grouped_gemm.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/linear_cross_entropy.h"
#include "kernels/cpu/lora_linear.h"
#include "kernels/cpu/moe_permute.h"
#include "kernels/cpu/optim.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/softmax.h"
#include "kernels/cpu/topk.h"

namespace automodel::cpu_backend {

namespace {

using kernels::AttentionShape;
using kernels::BinaryOp;
using kernels::LoraDims;
using kernels::LoraDropout;
using kernels::RopeParams;

[[noreturn]] void unsupported(const char* kernel, DType dt) {
  throw Error(detail::str("cpu backend: ", kernel, " has no ", dtype_name(dt), " kernel"), kernel,
              "use f32, f64 or bf16 tensors");
}

// f(T{}) for the floating storage types the kernels are written for.
template <class F>
void floating(DType dt, const char* kernel, F&& f) {
  visit_dtype_among<float, double, bf16>(dt, f, [&] { unsupported(kernel, dt); });
}

// f(I{}) for the index types i32 and i64.
template <class F>
void index_type(DType dt, const char* kernel, F&& f) {
  visit_dtype_among<int32_t, int64_t>(dt, f, [&] { unsupported(kernel, dt); });
}

template <class T>
const T* in(const void* p) {
  return static_cast<const T*>(p);
}
template <class T>
T* out(void* p) {
  return static_cast<T*>(p);
}
// Statistics of storage type T live in its compute type.
template <class T>
using stat_t = compute_t<T>;

// ---------------------------------------------------------------------------------------------
// Layout, element types, elementwise arithmetic and sums

void add_same_shape(DType dt, const void* a, const void* b, void* o, int64_t n) {
  floating(dt, "add_same_shape", [&](auto t) {
    using T = decltype(t);
    cpu::add_same_shape(in<T>(a), in<T>(b), out<T>(o), n);
  });
}

void binary_forward(BinaryOp op, DType dt, const void* a, const void* b, void* o, int64_t n) {
  floating(dt, "binary_forward", [&](auto t) {
    using T = decltype(t);
    cpu::binary_forward(op, in<T>(a), in<T>(b), out<T>(o), n);
  });
}

void binary_forward_strided(BinaryOp op, DType dt, const void* a, const int64_t* as, const void* b, const int64_t* bs,
                            void* o, const int64_t* shape, int ndim) {
  floating(dt, "binary_forward_strided", [&](auto t) {
    using T = decltype(t);
    cpu::binary_forward_strided(op, in<T>(a), as, in<T>(b), bs, out<T>(o), shape, ndim);
  });
}

void binary_backward(BinaryOp op, int which, DType dt, DType grad_dt, const void* g, const void* a, const int64_t* as,
                     const void* b, const int64_t* bs, void* grad, const int64_t* shape, int ndim) {
  if (dt == DType::bf16 && grad_dt == DType::f32) {
    cpu::binary_backward(op, which, in<bf16>(g), in<bf16>(a), as, in<bf16>(b), bs, out<float>(grad), shape, ndim);
    return;
  }
  if (grad_dt != dt) unsupported("binary_backward", grad_dt);
  floating(dt, "binary_backward", [&](auto t) {
    using T = decltype(t);
    cpu::binary_backward(op, which, in<T>(g), in<T>(a), as, in<T>(b), bs, out<T>(grad), shape, ndim);
  });
}

void scale(DType dt, const void* x, double factor, void* o, int64_t n) {
  floating(dt, "scale", [&](auto t) {
    using T = decltype(t);
    cpu::scale_forward(in<T>(x), factor, out<T>(o), n);
  });
}

void sum_forward(DType dt, const void* x, const int64_t* shape, int ndim, const uint8_t* reduce, double s, void* o) {
  floating(dt, "sum_forward", [&](auto t) {
    using T = decltype(t);
    cpu::sum_forward(in<T>(x), shape, ndim, reduce, s, out<T>(o));
  });
}

void sum_backward(DType dt, const void* g, const int64_t* shape, int ndim, const uint8_t* reduce, double s, void* gx) {
  floating(dt, "sum_backward", [&](auto t) {
    using T = decltype(t);
    cpu::sum_backward(in<T>(g), shape, ndim, reduce, s, out<T>(gx));
  });
}

// ---------------------------------------------------------------------------------------------
// Activations

void silu_forward(DType dt, const void* x, void* y, int64_t n) {
  floating(dt, "silu_forward", [&](auto t) {
    using T = decltype(t);
    cpu::silu_forward(in<T>(x), out<T>(y), n);
  });
}
void silu_backward(DType dt, const void* x, const void* g, void* gx, int64_t n) {
  floating(dt, "silu_backward", [&](auto t) {
    using T = decltype(t);
    cpu::silu_backward(in<T>(x), in<T>(g), out<T>(gx), n);
  });
}
void gelu_forward(DType dt, const void* x, void* y, int64_t n, bool tanh_approx) {
  floating(dt, "gelu_forward", [&](auto t) {
    using T = decltype(t);
    cpu::gelu_forward(in<T>(x), out<T>(y), n, tanh_approx);
  });
}
void gelu_backward(DType dt, const void* x, const void* g, void* gx, int64_t n, bool tanh_approx) {
  floating(dt, "gelu_backward", [&](auto t) {
    using T = decltype(t);
    cpu::gelu_backward(in<T>(x), in<T>(g), out<T>(gx), n, tanh_approx);
  });
}
void softcap_forward(DType dt, const void* x, void* y, int64_t n, double cap) {
  floating(dt, "softcap_forward", [&](auto t) {
    using T = decltype(t);
    cpu::softcap_forward(in<T>(x), out<T>(y), n, cap);
  });
}
void softcap_backward(DType dt, const void* x, const void* g, void* gx, int64_t n, double cap) {
  floating(dt, "softcap_backward", [&](auto t) {
    using T = decltype(t);
    cpu::softcap_backward(in<T>(x), in<T>(g), out<T>(gx), n, cap);
  });
}
void rsqrt_forward(DType dt, const void* x, void* y, int64_t n) {
  floating(dt, "rsqrt_forward", [&](auto t) {
    using T = decltype(t);
    cpu::rsqrt_forward(in<T>(x), out<T>(y), n);
  });
}
void rsqrt_backward(DType dt, const void* x, const void* g, void* gx, int64_t n) {
  floating(dt, "rsqrt_backward", [&](auto t) {
    using T = decltype(t);
    cpu::rsqrt_backward(in<T>(x), in<T>(g), out<T>(gx), n);
  });
}
void clamped_swiglu_forward(DType dt, const void* gate_up, void* y, int64_t n, double alpha, double limit) {
  floating(dt, "clamped_swiglu_forward", [&](auto t) {
    using T = decltype(t);
    cpu::clamped_swiglu_forward(in<T>(gate_up), out<T>(y), n, alpha, limit);
  });
}
void clamped_swiglu_backward(DType dt, const void* gate_up, const void* g, void* dgate_up, int64_t n, double alpha,
                             double limit) {
  floating(dt, "clamped_swiglu_backward", [&](auto t) {
    using T = decltype(t);
    cpu::clamped_swiglu_backward(in<T>(gate_up), in<T>(g), out<T>(dgate_up), n, alpha, limit);
  });
}
void swiglu_forward(DType dt, const void* gate, const void* up, void* y, int64_t n) {
  floating(dt, "swiglu_forward", [&](auto t) {
    using T = decltype(t);
    cpu::swiglu_forward(in<T>(gate), in<T>(up), out<T>(y), n);
  });
}
void swiglu_backward(DType dt, const void* gate, const void* up, const void* g, void* ggate, void* gup, int64_t n) {
  floating(dt, "swiglu_backward", [&](auto t) {
    using T = decltype(t);
    cpu::swiglu_backward(in<T>(gate), in<T>(up), in<T>(g), out<T>(ggate), out<T>(gup), n);
  });
}
void geglu_tanh_forward(DType dt, const void* gate, const void* up, void* y, int64_t n) {
  floating(dt, "geglu_tanh_forward", [&](auto t) {
    using T = decltype(t);
    cpu::geglu_tanh_forward(in<T>(gate), in<T>(up), out<T>(y), n);
  });
}
void geglu_tanh_backward(DType dt, const void* gate, const void* up, const void* g, void* ggate, void* gup, int64_t n) {
  floating(dt, "geglu_tanh_backward", [&](auto t) {
    using T = decltype(t);
    cpu::geglu_tanh_backward(in<T>(gate), in<T>(up), in<T>(g), out<T>(ggate), out<T>(gup), n);
  });
}

// ---------------------------------------------------------------------------------------------
// Softmax, norms, rope, attention

void softmax_forward(DType dt, const void* x, void* y, int64_t outer, int64_t dim, int64_t inner, bool log) {
  floating(dt, "softmax_forward", [&](auto t) {
    using T = decltype(t);
    cpu::softmax_forward(in<T>(x), out<T>(y), outer, dim, inner, log);
  });
}
void softmax_backward(DType dt, const void* y, const void* g, void* gx, int64_t outer, int64_t dim, int64_t inner,
                      bool log) {
  floating(dt, "softmax_backward", [&](auto t) {
    using T = decltype(t);
    cpu::softmax_backward(in<T>(y), in<T>(g), out<T>(gx), outer, dim, inner, log);
  });
}
void softmax_backward_from_input(DType dt, const void* x, const void* g, void* gx, int64_t outer, int64_t dim,
                                 int64_t inner, bool log) {
  if (dt != DType::bf16) unsupported("softmax_backward_from_input", dt);
  cpu::softmax_backward_from_input(in<bf16>(x), in<bf16>(g), out<bf16>(gx), outer, dim, inner, log);
}

void rmsnorm_forward(DType dt, const void* x, const void* w, void* y, void* rstd, int64_t rows, int64_t hidden,
                     double eps, bool unit_offset) {
  floating(dt, "rmsnorm_forward", [&](auto t) {
    using T = decltype(t);
    cpu::rmsnorm_forward(in<T>(x), in<T>(w), out<T>(y), out<stat_t<T>>(rstd), rows, hidden, eps, unit_offset);
  });
}
void add_rmsnorm_forward(DType dt, const void* x, const void* residual, const void* w, void* sum, void* y, void* rstd,
                         int64_t rows, int64_t hidden, double eps, bool unit_offset) {
  floating(dt, "add_rmsnorm_forward", [&](auto t) {
    using T = decltype(t);
    cpu::add_rmsnorm_forward(in<T>(x), in<T>(residual), in<T>(w), out<T>(sum), out<T>(y), out<stat_t<T>>(rstd), rows,
                             hidden, eps, unit_offset);
  });
}
void rmsnorm_backward(DType dt, const void* g, const void* x, const void* w, const void* rstd, void* dx, void* dw,
                      int64_t rows, int64_t hidden, bool unit_offset, const void* dx_add) {
  floating(dt, "rmsnorm_backward", [&](auto t) {
    using T = decltype(t);
    cpu::rmsnorm_backward(in<T>(g), in<T>(x), in<T>(w), in<stat_t<T>>(rstd), out<T>(dx), out<T>(dw), rows, hidden,
                          unit_offset, in<T>(dx_add));
  });
}
void layernorm_forward(DType dt, const void* x, const void* w, const void* b, void* y, void* mean, void* rstd,
                       int64_t rows, int64_t hidden, double eps) {
  floating(dt, "layernorm_forward", [&](auto t) {
    using T = decltype(t);
    cpu::layernorm_forward(in<T>(x), in<T>(w), in<T>(b), out<T>(y), out<stat_t<T>>(mean), out<stat_t<T>>(rstd), rows,
                           hidden, eps);
  });
}
void layernorm_backward(DType dt, const void* g, const void* x, const void* w, const void* mean, const void* rstd,
                        void* dx, void* dw, void* db, int64_t rows, int64_t hidden) {
  floating(dt, "layernorm_backward", [&](auto t) {
    using T = decltype(t);
    cpu::layernorm_backward(in<T>(g), in<T>(x), in<T>(w), in<stat_t<T>>(mean), in<stat_t<T>>(rstd), out<T>(dx),
                            out<T>(dw), out<T>(db), rows, hidden);
  });
}

void rope_forward(DType dt, const void* x, void* y, const int64_t* pos, const float* inv_freq, const RopeParams& p) {
  floating(dt, "rope_forward", [&](auto t) {
    using T = decltype(t);
    cpu::rope_forward(in<T>(x), out<T>(y), pos, inv_freq, p);
  });
}
void rope_backward(DType dt, const void* dy, void* dx, const int64_t* pos, const float* inv_freq, const RopeParams& p) {
  floating(dt, "rope_backward", [&](auto t) {
    using T = decltype(t);
    cpu::rope_backward(in<T>(dy), out<T>(dx), pos, inv_freq, p);
  });
}

void attention_forward(DType dt, const AttentionShape& s, const void* q, const void* k, const void* v, void* o,
                       void* lse) {
  floating(dt, "attention_forward", [&](auto t) {
    using T = decltype(t);
    cpu::attention_forward(s, in<T>(q), in<T>(k), in<T>(v), out<T>(o), out<stat_t<T>>(lse));
  });
}
void attention_backward(DType dt, const AttentionShape& s, const void* q, const void* k, const void* v, const void* o,
                        const void* dout, const void* lse, void* dq, void* dk, void* dv) {
  floating(dt, "attention_backward", [&](auto t) {
    using T = decltype(t);
    cpu::attention_backward(s, in<T>(q), in<T>(k), in<T>(v), in<T>(o), in<T>(dout), in<stat_t<T>>(lse), out<T>(dq),
                            out<T>(dk), out<T>(dv));
  });
}

// ---------------------------------------------------------------------------------------------
// Lookups, dropout

int64_t first_bad_index(DType index_dt, const void* ids, int64_t n, int64_t limit, int64_t* value) {
  int64_t bad = -1;
  index_type(index_dt, "first_bad_index", [&](auto i) {
    using I = decltype(i);
    bad = cpu::embedding_first_bad_id(in<I>(ids), n, limit);
    if (bad >= 0) *value = int64_t(in<I>(ids)[bad]);
  });
  return bad;
}
void embedding_forward(DType index_dt, DType dt, const void* ids, int64_t n, const void* weight, int64_t hidden,
                       void* o) {
  floating(dt, "embedding_forward", [&](auto t) {
    index_type(index_dt, "embedding_forward", [&](auto i) {
      using T = decltype(t);
      using I = decltype(i);
      cpu::embedding_forward(in<I>(ids), n, in<T>(weight), hidden, out<T>(o));
    });
  });
}
void embedding_backward(DType index_dt, DType dt, const void* ids, int64_t n, const void* grad, int64_t vocab,
                        int64_t hidden, int64_t padding_idx, void* dweight) {
  floating(dt, "embedding_backward", [&](auto t) {
    index_type(index_dt, "embedding_backward", [&](auto i) {
      using T = decltype(t);
      using I = decltype(i);
      cpu::embedding_backward(in<I>(ids), n, in<T>(grad), vocab, hidden, padding_idx, out<T>(dweight));
    });
  });
}
void gather_backward(DType dt, const void* g, const int64_t* index, void* gx, const int64_t* gx_strides,
                     int64_t gx_numel, const int64_t* index_shape, int ndim, int dim) {
  floating(dt, "gather_backward", [&](auto t) {
    using T = decltype(t);
    cpu::gather_backward(in<T>(g), index, out<T>(gx), gx_strides, gx_numel, index_shape, ndim, dim);
  });
}

void dropout_forward(DType dt, const void* x, void* y, int64_t n, double p, uint64_t seed, uint64_t first_block) {
  floating(dt, "dropout_forward", [&](auto t) {
    using T = decltype(t);
    cpu::dropout_forward(in<T>(x), out<T>(y), n, p, seed, first_block);
  });
}
void dropout_backward(DType dt, const void* g, void* gx, int64_t n, double p, uint64_t seed, uint64_t first_block) {
  floating(dt, "dropout_backward", [&](auto t) {
    using T = decltype(t);
    cpu::dropout_backward(in<T>(g), out<T>(gx), n, p, seed, first_block);
  });
}

// ---------------------------------------------------------------------------------------------
// Products

// f(In{}, Out{}) for the GEMM type pairs: f32 / f32, f64 / f64, bf16 / f32, bf16 / bf16.
template <class F>
void gemm_types(DType in_dt, DType out_dt, const char* kernel, F&& f) {
  if (in_dt == DType::f32 && out_dt == DType::f32) return f(float{}, float{});
  if (in_dt == DType::f64 && out_dt == DType::f64) return f(double{}, double{});
  if (in_dt == DType::bf16 && out_dt == DType::f32) return f(bf16{}, float{});
  if (in_dt == DType::bf16 && out_dt == DType::bf16) return f(bf16{}, bf16{});
  unsupported(kernel, in_dt == out_dt || in_dt == DType::bf16 ? out_dt : in_dt);
}
// alpha / beta in the kernel's scalar type: double for f64, float otherwise.
template <class In>
using scalar_t = std::conditional_t<std::is_same_v<In, double>, double, float>;

void gemm(DType in_dt, DType out_dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const void* A,
          int64_t lda, const void* B, int64_t ldb, double beta, void* C, int64_t ldc, const void* bias) {
  gemm_types(in_dt, out_dt, "gemm", [&](auto i, auto o) {
    using In = decltype(i);
    using Out = decltype(o);
    using S = scalar_t<In>;
    cpu::gemm(ta, tb, M, N, K, S(alpha), in<In>(A), lda, in<In>(B), ldb, S(beta), out<Out>(C), ldc, in<In>(bias));
  });
}
void gemm_batched(DType in_dt, DType out_dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
                  const void* A, const int64_t* a_off, int64_t lda, const void* B, const int64_t* b_off, int64_t ldb,
                  double beta, void* C, const int64_t* c_off, int64_t ldc, int64_t batch) {
  gemm_types(in_dt, out_dt, "gemm_batched", [&](auto i, auto o) {
    using In = decltype(i);
    using Out = decltype(o);
    using S = scalar_t<In>;
    cpu::gemm_batched(ta, tb, M, N, K, S(alpha), in<In>(A), a_off, lda, in<In>(B), b_off, ldb, S(beta), out<Out>(C),
                      c_off, ldc, batch);
  });
}
void column_sums(DType dt, const void* x, int64_t rows, int64_t cols, int64_t ld, void* o, bool accumulate) {
  floating(dt, "column_sums", [&](auto t) {
    using T = decltype(t);
    cpu::column_sums(in<T>(x), rows, cols, ld, out<T>(o), accumulate);
  });
}

void lora_linear_forward(DType dt, DType base_dt, const void* x, const void* w, const void* bias, const void* a,
                         const void* b, const LoraDims& d, double s, const LoraDropout& drop, void* u, void* y) {
  if (dt == DType::f32 && base_dt == DType::bf16) {  // a frozen bf16 base under f32 activations
    cpu::lora_linear_forward(in<float>(x), in<bf16>(w), in<bf16>(bias), in<float>(a), in<float>(b), d, s, drop,
                             out<float>(u), out<float>(y));
    return;
  }
  if (base_dt != dt) unsupported("lora_linear_forward", base_dt);
  floating(dt, "lora_linear_forward", [&](auto t) {
    using T = decltype(t);
    cpu::lora_linear_forward(in<T>(x), in<T>(w), in<T>(bias), in<T>(a), in<T>(b), d, s, drop, out<T>(u), out<T>(y));
  });
}
void lora_linear_backward(DType dt, DType base_dt, const void* g, const void* x, const void* w, const void* a,
                          const void* b, const void* u, const LoraDims& d, double s, const LoraDropout& drop, void* dx,
                          void* da, void* db, void* dw, void* dbias) {
  if (dt == DType::f32 && base_dt == DType::bf16) {  // frozen base: no dw / dbias
    cpu::lora_linear_backward(in<float>(g), in<float>(x), in<bf16>(w), in<float>(a), in<float>(b), in<float>(u), d, s,
                              drop, out<float>(dx), out<float>(da), out<float>(db));
    return;
  }
  if (base_dt != dt) unsupported("lora_linear_backward", base_dt);
  floating(dt, "lora_linear_backward", [&](auto t) {
    using T = decltype(t);
    cpu::lora_linear_backward(in<T>(g), in<T>(x), in<T>(w), in<T>(a), in<T>(b), in<T>(u), d, s, drop, out<T>(dx),
                              out<T>(da), out<T>(db), out<T>(dw), out<T>(dbias));
  });
}

// ---------------------------------------------------------------------------------------------
// Losses

void cross_entropy_forward(DType dt, const void* logits, const int64_t* labels, int64_t rows, int64_t vocab,
                           int64_t ignore_index, void* loss, void* stats) {
  floating(dt, "cross_entropy_forward", [&](auto t) {
    using T = decltype(t);
    cpu::cross_entropy_forward(in<T>(logits), labels, rows, vocab, ignore_index, out<stat_t<T>>(loss),
                               out<stat_t<T>>(stats));
  });
}
void cross_entropy_backward(DType dt, const void* logits, const int64_t* labels, const void* stats, const void* grad,
                            int64_t grad_stride, double s, int64_t rows, int64_t vocab, int64_t ignore_index,
                            void* dlogits) {
  floating(dt, "cross_entropy_backward", [&](auto t) {
    using T = decltype(t);
    cpu::cross_entropy_backward(in<T>(logits), labels, in<stat_t<T>>(stats), in<T>(grad), grad_stride, s, rows, vocab,
                                ignore_index, out<T>(dlogits));
  });
}
double sum_in_order(DType dt, const void* x, int64_t n, double start) {
  double total = 0;
  visit_dtype_among<float, double>(
      dt, [&](auto t) { total = cpu::sum_in_order(in<decltype(t)>(x), n, start); },
      [&] { unsupported("sum_in_order", dt); });
  return total;
}

size_t linear_cross_entropy_workspace(DType dt, const kernels::LinearCrossEntropyProblem& p, bool want_grad) {
  return cpu::linear_cross_entropy_workspace(p, dt, want_grad);
}
double linear_cross_entropy(DType dt, const kernels::LinearCrossEntropyProblem& p, const void* hidden,
                            const void* weight, const int64_t* labels, void* dhidden, void* dweight, void* workspace) {
  double total = 0;
  floating(dt, "linear_cross_entropy", [&](auto t) {
    using T = decltype(t);
    total =
        cpu::linear_cross_entropy(p, in<T>(hidden), in<T>(weight), labels, out<T>(dhidden), out<T>(dweight), workspace);
  });
  return total;
}

// ---------------------------------------------------------------------------------------------
// Mixture of experts

void topk_forward(DType dt, const void* x, int64_t rows, int64_t cols, int64_t k, void* values, int64_t* indices) {
  floating(dt, "topk_forward", [&](auto t) {
    using T = decltype(t);
    cpu::topk_forward(in<T>(x), rows, cols, k, out<T>(values), indices);
  });
}
void topk_backward(DType dt, const void* g, const int64_t* indices, int64_t rows, int64_t cols, int64_t k, void* gx) {
  floating(dt, "topk_backward", [&](auto t) {
    using T = decltype(t);
    cpu::topk_backward(in<T>(g), indices, rows, cols, k, out<T>(gx));
  });
}
void moe_permute_forward(DType dt, const void* x, const int64_t* positions, int64_t tokens, int64_t k, int64_t hidden,
                         void* o) {
  floating(dt, "moe_permute_forward", [&](auto t) {
    using T = decltype(t);
    cpu::moe_permute_forward(in<T>(x), positions, tokens, k, hidden, out<T>(o));
  });
}
void moe_permute_backward(DType dt, const void* g, const int64_t* positions, int64_t tokens, int64_t k, int64_t hidden,
                          void* dx) {
  floating(dt, "moe_permute_backward", [&](auto t) {
    using T = decltype(t);
    cpu::moe_permute_backward(in<T>(g), positions, tokens, k, hidden, out<T>(dx));
  });
}
void moe_unpermute_forward(DType dt, const void* y, const void* weights, const int64_t* positions, int64_t tokens,
                           int64_t k, int64_t hidden, void* o) {
  floating(dt, "moe_unpermute_forward", [&](auto t) {
    using T = decltype(t);
    cpu::moe_unpermute_forward(in<T>(y), in<T>(weights), positions, tokens, k, hidden, out<T>(o));
  });
}
void moe_unpermute_backward(DType dt, const void* g, const void* y, const void* weights, const int64_t* positions,
                            int64_t tokens, int64_t k, int64_t hidden, void* dy, void* dweights) {
  floating(dt, "moe_unpermute_backward", [&](auto t) {
    using T = decltype(t);
    cpu::moe_unpermute_backward(in<T>(g), in<T>(y), in<T>(weights), positions, tokens, k, hidden, out<T>(dy),
                                out<T>(dweights));
  });
}
void grouped_gemm_forward(DType dt, const void* x, const void* w, const int64_t* counts, int64_t groups, int64_t n,
                          int64_t k, bool w_transposed, void* y) {
  floating(dt, "grouped_gemm_forward", [&](auto t) {
    using T = decltype(t);
    cpu::grouped_gemm_forward(in<T>(x), in<T>(w), counts, groups, n, k, w_transposed, out<T>(y));
  });
}
void grouped_gemm_backward(DType dt, const void* g, const void* x, const void* w, const int64_t* counts, int64_t groups,
                           int64_t n, int64_t k, bool w_transposed, void* dx, void* dw) {
  floating(dt, "grouped_gemm_backward", [&](auto t) {
    using T = decltype(t);
    cpu::grouped_gemm_backward(in<T>(g), in<T>(x), in<T>(w), counts, groups, n, k, w_transposed, out<T>(dx),
                               out<T>(dw));
  });
}

constexpr kernels::Backend kCpu{
    .name = "cpu",
    .strided_copy = cpu::strided_copy,
    .cast = [](const void* src, DType src_dtype, void* dst, DType dst_dtype,
               int64_t n) { cpu::cast(src, src_dtype, dst, dst_dtype, n); },
    .add_same_shape = add_same_shape,
    .binary_forward = binary_forward,
    .binary_forward_strided = binary_forward_strided,
    .binary_backward = binary_backward,
    .scale = scale,
    .sum_forward = sum_forward,
    .sum_backward = sum_backward,
    .silu_forward = silu_forward,
    .silu_backward = silu_backward,
    .gelu_forward = gelu_forward,
    .gelu_backward = gelu_backward,
    .softcap_forward = softcap_forward,
    .softcap_backward = softcap_backward,
    .rsqrt_forward = rsqrt_forward,
    .rsqrt_backward = rsqrt_backward,
    .swiglu_forward = swiglu_forward,
    .swiglu_backward = swiglu_backward,
    .geglu_tanh_forward = geglu_tanh_forward,
    .geglu_tanh_backward = geglu_tanh_backward,
    .clamped_swiglu_forward = clamped_swiglu_forward,
    .clamped_swiglu_backward = clamped_swiglu_backward,
    .softmax_forward = softmax_forward,
    .softmax_backward = softmax_backward,
    .softmax_backward_from_input = softmax_backward_from_input,
    .rmsnorm_forward = rmsnorm_forward,
    .add_rmsnorm_forward = add_rmsnorm_forward,
    .rmsnorm_backward = rmsnorm_backward,
    .layernorm_forward = layernorm_forward,
    .layernorm_backward = layernorm_backward,
    .rope_forward = rope_forward,
    .rope_backward = rope_backward,
    .attention_forward = attention_forward,
    .attention_backward = attention_backward,
    .first_bad_index = first_bad_index,
    .embedding_forward = embedding_forward,
    .embedding_backward = embedding_backward,
    .concat_forward = cpu::concat_forward,
    .concat_backward = cpu::concat_backward,
    .gather_forward = cpu::gather_forward,
    .gather_backward = gather_backward,
    .dropout_forward = dropout_forward,
    .dropout_backward = dropout_backward,
    .gemm = gemm,
    .gemm_batched = gemm_batched,
    .column_sums = column_sums,
    .lora_linear_forward = lora_linear_forward,
    .lora_linear_backward = lora_linear_backward,
    .cross_entropy_forward = cross_entropy_forward,
    .cross_entropy_backward = cross_entropy_backward,
    .count_labels = cpu::count_labels,
    .sum_in_order = sum_in_order,
    .linear_cross_entropy_workspace = linear_cross_entropy_workspace,
    .linear_cross_entropy = linear_cross_entropy,
    .adam_update = cpu::adam_update,
    .sgd_update = cpu::sgd_update,
    .grad_prologue = cpu::grad_prologue,
    .grad_norm_power = cpu::grad_norm_power,
    .master_reconstruct = cpu::master_reconstruct,
    .master_split = cpu::master_split,
    .stochastic_round = cpu::stochastic_round,
    .adamw8bit_dense = cpu::adamw8bit_dense,
    .adamw8bit_blocks = cpu::adamw8bit_blocks,
    .topk_forward = topk_forward,
    .topk_backward = topk_backward,
    .moe_routing = cpu::moe_routing,
    .moe_permute_forward = moe_permute_forward,
    .moe_permute_backward = moe_permute_backward,
    .moe_unpermute_forward = moe_unpermute_forward,
    .moe_unpermute_backward = moe_unpermute_backward,
    .grouped_gemm_forward = grouped_gemm_forward,
    .grouped_gemm_backward = grouped_gemm_backward,
};

}  // namespace

}  // namespace automodel::cpu_backend

namespace automodel::kernels {

const Backend& cpu_backend() { return cpu_backend::kCpu; }

}  // namespace automodel::kernels
