// GEMM throughput: fp32 and bf16 (oneDNN; bf16 with fp32 accumulation) at the shapes of a
// 135M-parameter Llama training step (512 tokens, hidden 576, MLP 1536, vocab 49152) and square
// 1024 / 2048; and ops::linear forward + backward. Threads: OMP_NUM_THREADS.
#include <benchmark/benchmark.h>

#include <vector>

#include "autograd/engine.h"
#include "bench_util.h"
#include "core/rng.h"
#include "core/threads.h"
#include "kernels/cpu/gemm.h"
#include "ops/cast.h"
#include "ops/matmul.h"

using namespace automodel;
using bench::init_threads;
using bench::random_buffer;

namespace {

void set_flops(benchmark::State& state, double flops_per_iter) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iter * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["threads"] = num_threads();
}

// C[M, N] = A[M, K] @ op(B): B stored [N, K] like an nn.Linear weight (tb, "_nt") or [K, N] ("_nn"). With
// layers > 1, one GEMM per layer over that many distinct sets of operands, as a training step meets them: with 30
// layers (SmolLM2's) the weights and activations come from L3 or memory, not from the last call's cache.
template <class T, bool tb>
void BM_gemm(benchmark::State& state) {
  init_threads();
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2), layers = state.range(3);
  std::vector<std::vector<T>> A, B, C;
  for (int64_t l = 0; l < layers; ++l) {
    A.push_back(random_buffer<T>(M * K, 2 * l + 1, 0.1f));
    B.push_back(random_buffer<T>(K * N, 2 * l + 2, 0.1f));
    C.emplace_back(size_t(M * N));
  }
  for (auto _ : state) {
    for (int64_t l = 0; l < layers; ++l)
      cpu::gemm(false, tb, M, N, K, 1.0f, A[l].data(), K, B[l].data(), tb ? K : N, 0.0f, C[l].data(), N);
    benchmark::ClobberMemory();
  }
  set_flops(state, 2.0 * double(M) * double(N) * double(K) * double(layers));
}

// Llama-135M step, B as the weight [N, K]: q/o proj, MLP up/gate, MLP down, lm_head (512 tokens, hidden 576).
void llama_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K", "layers"});
  for (auto [n, k] : {std::pair<int64_t, int64_t>{576, 576}, {1536, 576}, {576, 1536}, {49152, 576}})
    b->Args({512, n, k, 1});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
// The MLP's shapes over 30 layers' operands (compare with llama_shapes' single set).
void llama_layer_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K", "layers"})->Args({512, 1536, 576, 30})->Args({512, 576, 1536, 30});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
void square_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K", "layers"})->Args({1024, 1024, 1024, 1})->Args({2048, 2048, 2048, 1});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_gemm<float, true>)->Name("sgemm_f32_nt")->Apply(llama_shapes);
BENCHMARK(BM_gemm<float, false>)->Name("sgemm_f32_nn")->Apply(square_shapes);
BENCHMARK(BM_gemm<bf16, true>)->Name("gemm_bf16_onednn_nt")->Apply(llama_shapes);
BENCHMARK(BM_gemm<bf16, true>)->Name("gemm_bf16_onednn_nt_layers")->Apply(llama_layer_shapes);
BENCHMARK(BM_gemm<bf16, false>)->Name("gemm_bf16_onednn_nn")->Apply(square_shapes);

// y = linear(x, W) then backward (dx, dW): three GEMMs of 2*M*N*K each.
template <DType dt>
void BM_linear_fwd_bwd(benchmark::State& state) {
  init_threads();
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  Generator gen(3);
  Tensor x = ops::to_dtype(randn({M, K}, gen), dt).set_requires_grad(true);
  Tensor w = ops::to_dtype(randn({N, K}, gen), dt).set_requires_grad(true);
  Tensor g = ops::to_dtype(randn({M, N}, gen), dt);
  for (auto _ : state) {
    x.set_grad(Tensor());
    w.set_grad(Tensor());
    Tensor y = ops::linear(x, w);
    autograd::backward({y}, {g});
    benchmark::DoNotOptimize(w.grad().raw_data());
  }
  set_flops(state, 6.0 * double(M) * double(N) * double(K));
}

void linear_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K"})->Args({512, 576, 576})->Args({512, 1536, 576})->Args({512, 576, 1536});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_linear_fwd_bwd<DType::f32>)->Name("linear_fwd_bwd_f32")->Apply(linear_shapes);
BENCHMARK(BM_linear_fwd_bwd<DType::bf16>)->Name("linear_fwd_bwd_bf16")->Apply(linear_shapes);

}  // namespace
