#pragma once
// The backend table: for one kind of device, a struct of function pointers holding every kernel an op calls,
// forward and backward (one entry per kernel, named as the kernel). ops/ looks the table up once per op call by the
// device its tensors live on (ops/backend.h) and calls the entries; nothing above ops/ calls a kernel directly.
//
// Entries take raw device pointers and sizes as the kernels do, with the element types as DType arguments: each
// backend turns them into its typed kernels (kernels/cpu/backend.cpp for the CPU). A kernel an op needs is added
// here once (AUTOMODEL_BACKEND_KERNELS below) and then filled in by every backend; the backend test
// (tests/unit/backend_ops_test.cpp) runs each entry of each backend against a reference and fails for an entry it
// has no case for.
//
// A CUDA backend plugs in as kernels/cuda/backend.cu defining cuda_backend() from kernels/cuda/*.cu (the same names
// as kernels/cpu/*.cpp), and core/device_memory.h's cuda_device_memory() from its allocator. A build without CUDA
// links kernels/no_cuda/backend.cpp instead, whose cuda_backend() raises Error (as MLX links backend/no_gpu).
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "kernels/shapes.h"

namespace automodel::kernels {

// X(name, signature) for every kernel of the table. Element types: `dt` of the tensors named by the kernel's
// description (kernels/cpu/<file>.h), statistics (rstd, mean, lse, stats, loss) in the compute type (f32; f64 for
// f64). Optional pointers may be null as in the CPU kernel.
#define AUTOMODEL_BACKEND_KERNELS(X)                                                                                   \
  /* layout and element types: kernels/cpu/copy.h, cast.h, accumulate.h */                                             \
  X(strided_copy, void(const void* src, const int64_t* src_strides, void* dst, const int64_t* dst_strides,             \
                       const int64_t* shape, int ndim, size_t elem_size))                                              \
  X(cast, void(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n))                               \
  X(add_same_shape, void(DType dt, const void* a, const void* b, void* out, int64_t n))                                \
  /* elementwise arithmetic and sums: binary.h, reduce.h */                                                            \
  X(binary_forward, void(BinaryOp op, DType dt, const void* a, const void* b, void* out, int64_t n))                   \
  X(binary_forward_strided, void(BinaryOp op, DType dt, const void* a, const int64_t* a_strides, const void* b,        \
                                 const int64_t* b_strides, void* out, const int64_t* shape, int ndim))                 \
  X(binary_backward,                                                                                                   \
    void(BinaryOp op, int which, DType dt, DType grad_dt, const void* g, const void* a, const int64_t* a_strides,      \
         const void* b, const int64_t* b_strides, void* grad, const int64_t* shape, int ndim))                         \
  X(scale, void(DType dt, const void* x, double factor, void* out, int64_t n))                                         \
  X(sum_forward,                                                                                                       \
    void(DType dt, const void* x, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, void* out))     \
  X(sum_backward,                                                                                                      \
    void(DType dt, const void* g, const int64_t* shape, int ndim, const uint8_t* reduce, double scale, void* gx))      \
  /* pointwise activations: activation.h */                                                                            \
  X(silu_forward, void(DType dt, const void* x, void* y, int64_t n))                                                   \
  X(silu_backward, void(DType dt, const void* x, const void* g, void* gx, int64_t n))                                  \
  X(gelu_forward, void(DType dt, const void* x, void* y, int64_t n, bool tanh_approx))                                 \
  X(gelu_backward, void(DType dt, const void* x, const void* g, void* gx, int64_t n, bool tanh_approx))                \
  X(softcap_forward, void(DType dt, const void* x, void* y, int64_t n, double cap))                                    \
  X(softcap_backward, void(DType dt, const void* x, const void* g, void* gx, int64_t n, double cap))                   \
  X(rsqrt_forward, void(DType dt, const void* x, void* y, int64_t n))                                                  \
  X(rsqrt_backward, void(DType dt, const void* x, const void* g, void* gx, int64_t n))                                 \
  X(swiglu_forward, void(DType dt, const void* gate, const void* up, void* y, int64_t n))                              \
  X(swiglu_backward,                                                                                                   \
    void(DType dt, const void* gate, const void* up, const void* g, void* ggate, void* gup, int64_t n))                \
  X(geglu_tanh_forward, void(DType dt, const void* gate, const void* up, void* y, int64_t n))                          \
  X(geglu_tanh_backward,                                                                                               \
    void(DType dt, const void* gate, const void* up, const void* g, void* ggate, void* gup, int64_t n))                \
  /* clamped_swiglu.h (gate_up holds 2n interleaved values) */                                                         \
  X(clamped_swiglu_forward, void(DType dt, const void* gate_up, void* y, int64_t n, double alpha, double limit))       \
  X(clamped_swiglu_backward,                                                                                           \
    void(DType dt, const void* gate_up, const void* g, void* dgate_up, int64_t n, double alpha, double limit))         \
  /* softmax.h */                                                                                                      \
  X(softmax_forward, void(DType dt, const void* x, void* y, int64_t outer, int64_t dim, int64_t inner, bool log))      \
  X(softmax_backward,                                                                                                  \
    void(DType dt, const void* y, const void* g, void* gx, int64_t outer, int64_t dim, int64_t inner, bool log))       \
  X(softmax_backward_from_input,                                                                                       \
    void(DType dt, const void* x, const void* g, void* gx, int64_t outer, int64_t dim, int64_t inner, bool log))       \
  /* norms: rmsnorm.h, layernorm.h */                                                                                  \
  X(rmsnorm_forward, void(DType dt, const void* x, const void* w, void* y, void* rstd, int64_t rows, int64_t hidden,   \
                          double eps, bool unit_offset))                                                               \
  X(add_rmsnorm_forward, void(DType dt, const void* x, const void* residual, const void* w, void* sum, void* y,        \
                              void* rstd, int64_t rows, int64_t hidden, double eps, bool unit_offset))                 \
  X(rmsnorm_backward, void(DType dt, const void* g, const void* x, const void* w, const void* rstd, void* dx,          \
                           void* dw, int64_t rows, int64_t hidden, bool unit_offset, const void* dx_add))              \
  X(layernorm_forward, void(DType dt, const void* x, const void* w, const void* b, void* y, void* mean, void* rstd,    \
                            int64_t rows, int64_t hidden, double eps))                                                 \
  X(layernorm_backward, void(DType dt, const void* g, const void* x, const void* w, const void* mean,                  \
                             const void* rstd, void* dx, void* dw, void* db, int64_t rows, int64_t hidden))            \
  /* rope.h, attention.h */                                                                                            \
  X(rope_forward,                                                                                                      \
    void(DType dt, const void* x, void* y, const int64_t* pos, const float* inv_freq, const RopeParams& p))            \
  X(rope_backward,                                                                                                     \
    void(DType dt, const void* dy, void* dx, const int64_t* pos, const float* inv_freq, const RopeParams& p))          \
  X(attention_forward,                                                                                                 \
    void(DType dt, const AttentionShape& s, const void* q, const void* k, const void* v, void* out, void* lse))        \
  X(attention_backward, void(DType dt, const AttentionShape& s, const void* q, const void* k, const void* v,           \
                             const void* out, const void* dout, const void* lse, void* dq, void* dk, void* dv))        \
  /* lookups: embedding.h, concat.h (ids of index_dt i32 or i64; the first id outside [0, limit) and its value) */     \
  X(first_bad_index, int64_t(DType index_dt, const void* ids, int64_t n, int64_t limit, int64_t* value))               \
  X(embedding_forward,                                                                                                 \
    void(DType index_dt, DType dt, const void* ids, int64_t n, const void* weight, int64_t hidden, void* out))         \
  X(embedding_backward, void(DType index_dt, DType dt, const void* ids, int64_t n, const void* grad, int64_t vocab,    \
                             int64_t hidden, int64_t padding_idx, void* dweight))                                      \
  X(concat_forward, void(const void* const* srcs, const int64_t* sizes, int n, void* dst, int64_t outer,               \
                         int64_t inner, size_t elem_size))                                                             \
  X(concat_backward, void(const void* src, const int64_t* sizes, int n, void* const* dsts, int64_t outer,              \
                          int64_t inner, size_t elem_size))                                                            \
  X(gather_forward, void(const void* x, const int64_t* x_strides, const int64_t* index, void* out,                     \
                         const int64_t* index_shape, int ndim, int dim, size_t elem_size))                             \
  X(gather_backward, void(DType dt, const void* g, const int64_t* index, void* gx, const int64_t* gx_strides,          \
                          int64_t gx_numel, const int64_t* index_shape, int ndim, int dim))                            \
  /* dropout.h */                                                                                                      \
  X(dropout_forward, void(DType dt, const void* x, void* y, int64_t n, double p, uint64_t seed, uint64_t first_block)) \
  X(dropout_backward,                                                                                                  \
    void(DType dt, const void* g, void* gx, int64_t n, double p, uint64_t seed, uint64_t first_block))                 \
  /* products: gemm.h (in_dt / out_dt: f32 / f32, f64 / f64, bf16 / f32, bf16 / bf16), lora_linear.h (base_dt: dt,     \
     or bf16 under f32) */                                                                                             \
  X(gemm,                                                                                                              \
    void(DType in_dt, DType out_dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const void* A,    \
         int64_t lda, const void* B, int64_t ldb, double beta, void* C, int64_t ldc, const void* bias))                \
  X(gemm_batched, void(DType in_dt, DType out_dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,     \
                       const void* A, const int64_t* a_off, int64_t lda, const void* B, const int64_t* b_off,          \
                       int64_t ldb, double beta, void* C, const int64_t* c_off, int64_t ldc, int64_t batch))           \
  X(column_sums, void(DType dt, const void* x, int64_t rows, int64_t cols, int64_t ld, void* out, bool accumulate))    \
  X(lora_linear_forward,                                                                                               \
    void(DType dt, DType base_dt, const void* x, const void* w, const void* bias, const void* a, const void* b,        \
         const LoraDims& d, double scale, const LoraDropout& drop, void* u, void* y))                                  \
  X(lora_linear_backward, void(DType dt, DType base_dt, const void* g, const void* x, const void* w, const void* a,    \
                               const void* b, const void* u, const LoraDims& d, double scale, const LoraDropout& drop, \
                               void* dx, void* da, void* db, void* dw, void* dbias))                                   \
  /* losses: cross_entropy.h, linear_cross_entropy.h */                                                                \
  X(cross_entropy_forward, void(DType dt, const void* logits, const int64_t* labels, int64_t rows, int64_t vocab,      \
                                int64_t ignore_index, void* loss, void* stats))                                        \
  X(cross_entropy_backward,                                                                                            \
    void(DType dt, const void* logits, const int64_t* labels, const void* stats, const void* grad,                     \
         int64_t grad_stride, double scale, int64_t rows, int64_t vocab, int64_t ignore_index, void* dlogits))         \
  X(count_labels,                                                                                                      \
    int64_t(const int64_t* labels, int64_t n, int64_t vocab, int64_t ignore_index, int64_t* bad_position))             \
  X(sum_in_order, double(DType dt, const void* x, int64_t n, double start))                                            \
  X(linear_cross_entropy_workspace, size_t(DType dt, const LinearCrossEntropyProblem& p, bool want_grad))              \
  X(linear_cross_entropy, double(DType dt, const LinearCrossEntropyProblem& p, const void* hidden, const void* weight, \
                                 const int64_t* labels, void* dhidden, void* dweight, void* workspace))                \
  /* optimizers: optim.h, adamw8bit.h (sum_sq: a host accumulator) */                                                  \
  X(adam_update, void(DType p_dt, DType g_dt, const AdamStep& s, void* p, const void* g, void* m, void* v, int64_t n)) \
  X(sgd_update, void(DType p_dt, DType g_dt, const SgdStep& s, void* p, const void* g, void* buf, int64_t n))          \
  X(grad_prologue, void(DType dt, void* g, int64_t n, double* sum_sq, bool scale, double coef))                        \
  X(grad_norm_power, double(DType dt, const void* g, int64_t n, double norm_type))                                     \
  X(master_reconstruct, void(const void* p, const void* r, float* x, int64_t n))                                       \
  X(master_split, int64_t(const float* x, void* p, void* r, int64_t n, int64_t* failures))                             \
  X(stochastic_round, void(const float* x, void* p, int64_t n, uint32_t key, int64_t first))                           \
  X(adamw8bit_dense, void(DType p_dt, DType g_dt, const Adam8Step& s, void* p, const void* g, float* m, float* v,      \
                          int64_t n, bool rounds, uint32_t key, int64_t first))                                        \
  X(adamw8bit_blocks,                                                                                                  \
    void(DType p_dt, DType g_dt, const Adam8Step& s, void* p, const void* g, uint8_t* codes_m, uint8_t* codes_v,       \
         float* scales_m, float* scales_v, int64_t n, int64_t block_size, bool rounds, uint32_t key, int64_t first))   \
  /* mixture of experts: topk.h, moe_permute.h (positions, counts: i64), grouped_gemm.h (counts in host memory) */     \
  X(topk_forward,                                                                                                      \
    void(DType dt, const void* x, int64_t rows, int64_t cols, int64_t k, void* values, int64_t* indices))              \
  X(topk_backward,                                                                                                     \
    void(DType dt, const void* g, const int64_t* indices, int64_t rows, int64_t cols, int64_t k, void* gx))            \
  X(moe_routing,                                                                                                       \
    void(const int64_t* experts, int64_t slots, int64_t num_experts, int64_t* counts, int64_t* positions))             \
  X(moe_permute_forward,                                                                                               \
    void(DType dt, const void* x, const int64_t* positions, int64_t tokens, int64_t k, int64_t hidden, void* out))     \
  X(moe_permute_backward,                                                                                              \
    void(DType dt, const void* g, const int64_t* positions, int64_t tokens, int64_t k, int64_t hidden, void* dx))      \
  X(moe_unpermute_forward, void(DType dt, const void* y, const void* weights, const int64_t* positions,                \
                                int64_t tokens, int64_t k, int64_t hidden, void* out))                                 \
  X(moe_unpermute_backward,                                                                                            \
    void(DType dt, const void* g, const void* y, const void* weights, const int64_t* positions, int64_t tokens,        \
         int64_t k, int64_t hidden, void* dy, void* dweights))                                                         \
  X(grouped_gemm_forward, void(DType dt, const void* x, const void* w, const int64_t* counts, int64_t groups,          \
                               int64_t n, int64_t k, bool w_transposed, void* y))                                      \
  X(grouped_gemm_backward, void(DType dt, const void* g, const void* x, const void* w, const int64_t* counts,          \
                                int64_t groups, int64_t n, int64_t k, bool w_transposed, void* dx, void* dw))

struct Backend {
  const char* name;
#define AUTOMODEL_BACKEND_FIELD(kernel, signature) std::add_pointer_t<signature> kernel;
  AUTOMODEL_BACKEND_KERNELS(AUTOMODEL_BACKEND_FIELD)
#undef AUTOMODEL_BACKEND_FIELD
};

// Every entry of the table by name, in order.
inline const std::vector<std::string>& kernel_names() {
#define AUTOMODEL_BACKEND_NAME(kernel, signature) #kernel,
  static const std::vector<std::string> names{AUTOMODEL_BACKEND_KERNELS(AUTOMODEL_BACKEND_NAME)};
#undef AUTOMODEL_BACKEND_NAME
  return names;
}

// The names of the entries `b` leaves empty (a backend must fill them all).
inline std::vector<std::string> missing_kernels(const Backend& b) {
  std::vector<std::string> missing;
#define AUTOMODEL_BACKEND_CHECK(kernel, signature) \
  if (b.kernel == nullptr) missing.push_back(#kernel);
  AUTOMODEL_BACKEND_KERNELS(AUTOMODEL_BACKEND_CHECK)
#undef AUTOMODEL_BACKEND_CHECK
  return missing;
}

// The CPU backend (kernels/cpu/backend.cpp).
const Backend& cpu_backend();
// The CUDA backend of `device`; in a build without CUDA, kernels/no_cuda's stub raises an Error naming `op`.
const Backend& cuda_backend(Device device, const char* op);

}  // namespace automodel::kernels
