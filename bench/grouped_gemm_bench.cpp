// Grouped GEMM (kernels/cpu/grouped_gemm.h) against one dense GEMM of the same FLOPs: the experts' projections of a
// Qwen3-MoE-shaped layer scaled to this machine (hidden 1024, moe_intermediate 384, 16 experts, top-4, 2048 tokens:
// 8192 routed rows), with the rows spread evenly over the experts or skewed (half to one expert, two experts
// without any). Forward (y = x W_e^T per expert) and backward (dx and dW). Threads: OMP_NUM_THREADS.
#include <benchmark/benchmark.h>

#include <numeric>
#include <vector>

#include "bench_util.h"
#include "core/threads.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/grouped_gemm.h"

using namespace automodel;
using bench::init_threads;
using bench::random_buffer;

namespace {

constexpr int64_t kExperts = 16, kRows = 2048 * 4;

// Rows per expert: even, or skewed (expert 0 half of them, experts 14 and 15 none, the rest shared).
std::vector<int64_t> expert_rows(bool skewed) {
  std::vector<int64_t> counts(size_t(kExperts), kRows / kExperts);
  if (skewed) {
    counts.assign(size_t(kExperts), 0);
    counts[0] = kRows / 2;
    for (int64_t e = 1; e < kExperts - 2; ++e) counts[size_t(e)] = (kRows / 2) / (kExperts - 3);
    counts[1] += kRows - std::accumulate(counts.begin(), counts.end(), int64_t(0));
  }
  return counts;
}

void set_flops(benchmark::State& state, double flops_per_iter) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iter * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["threads"] = num_threads();
}

// Args: out features N, in features K, skewed (0/1), backward (0/1).
template <class T>
void BM_grouped_gemm(benchmark::State& state) {
  init_threads();
  const int64_t N = state.range(0), K = state.range(1);
  const bool backward = state.range(3) != 0;
  const std::vector<int64_t> counts = expert_rows(state.range(2) != 0);
  std::vector<T> x = random_buffer<T>(kRows * K, 1, 0.1f), w = random_buffer<T>(kExperts * N * K, 2, 0.1f),
                 g = random_buffer<T>(kRows * N, 3, 0.1f), y(size_t(kRows * N)), dx(size_t(kRows * K)),
                 dw(size_t(kExperts * N * K));
  for (auto _ : state) {
    if (backward)
      cpu::grouped_gemm_backward(g.data(), x.data(), w.data(), counts.data(), kExperts, N, K, false, dx.data(),
                                 dw.data());
    else
      cpu::grouped_gemm_forward(x.data(), w.data(), counts.data(), kExperts, N, K, false, y.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, (backward ? 4.0 : 2.0) * double(kRows) * double(N) * double(K));
}

// The same FLOPs as one GEMM over all rows with one weight: forward x W^T; backward dx = g W and dW = g^T x.
template <class T>
void BM_dense_same_flops(benchmark::State& state) {
  init_threads();
  const int64_t N = state.range(0), K = state.range(1);
  const bool backward = state.range(3) != 0;
  std::vector<T> x = random_buffer<T>(kRows * K, 1, 0.1f), w = random_buffer<T>(N * K, 2, 0.1f),
                 g = random_buffer<T>(kRows * N, 3, 0.1f), y(size_t(kRows * N)), dx(size_t(kRows * K)),
                 dw(size_t(N * K));
  for (auto _ : state) {
    if (backward) {
      cpu::gemm(false, false, kRows, K, N, 1.0f, g.data(), N, w.data(), K, 0.0f, dx.data(), K);
      cpu::gemm(true, false, N, K, kRows, 1.0f, g.data(), N, x.data(), K, 0.0f, dw.data(), K);
    } else {
      cpu::gemm(false, true, kRows, N, K, 1.0f, x.data(), K, w.data(), K, 0.0f, y.data(), N);
    }
    benchmark::ClobberMemory();
  }
  set_flops(state, (backward ? 4.0 : 2.0) * double(kRows) * double(N) * double(K));
}

// gate_up_proj (N = 2 x 384, K = 1024) and down_proj (N = 1024, K = 384), even / skewed, forward / backward.
void moe_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "K", "skewed", "backward"});
  for (auto [n, k] : {std::pair<int64_t, int64_t>{768, 1024}, {1024, 384}})
    for (int64_t skewed : {0, 1})
      for (int64_t backward : {0, 1}) b->Args({n, k, skewed, backward});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
void dense_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "K", "skewed", "backward"});
  for (auto [n, k] : {std::pair<int64_t, int64_t>{768, 1024}, {1024, 384}})
    for (int64_t backward : {0, 1}) b->Args({n, k, 0, backward});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_grouped_gemm<float>)->Name("grouped_gemm_f32")->Apply(moe_shapes);
BENCHMARK(BM_grouped_gemm<bf16>)->Name("grouped_gemm_bf16")->Apply(moe_shapes);
BENCHMARK(BM_dense_same_flops<float>)->Name("grouped_gemm_dense_f32")->Apply(dense_shapes);
BENCHMARK(BM_dense_same_flops<bf16>)->Name("grouped_gemm_dense_bf16")->Apply(dense_shapes);
