// Causal flash attention, forward and backward, at the shapes of the training benchmarks:
// SmolLM2-135M (9 query / 3 kv heads) and Llama-3.2-1B (32 / 8), head_dim 64, 512 and 2048 tokens.
// GFLOP/s counts the causal half of the four (forward) and ten (forward + backward) T x T x D
// products per head. Threads: OMP_NUM_THREADS.
#include <benchmark/benchmark.h>

#include <vector>

#include "bench_util.h"
#include "kernels/cpu/attention.h"

using namespace automodel;
using bench::init_threads;
using bench::random_buffer;

namespace {

cpu::AttentionShape shape_of(const benchmark::State& state) {
  cpu::AttentionShape s;
  s.batch = 1;
  s.q_len = s.kv_len = state.range(0);
  s.q_heads = state.range(1);
  s.kv_heads = state.range(2);
  s.head_dim = s.v_head_dim = 64;
  s.scale = 0.125;
  return s;
}

// Multiply-adds of one T x T x D product over the causal half, times 2 flops, for every head.
double causal_product_flops(const cpu::AttentionShape& s) {
  return 2.0 * double(s.q_heads) * double(s.q_len) * double(s.kv_len) * double(s.head_dim) / 2.0;
}

template <class T>
void BM_attention(benchmark::State& state) {
  init_threads();
  const cpu::AttentionShape s = shape_of(state);
  const bool backward = state.range(3) != 0;
  const int64_t nq = s.q_len * s.q_heads * s.head_dim, nkv = s.kv_len * s.kv_heads * s.head_dim;
  std::vector<T> q = random_buffer<T>(nq, 1), k = random_buffer<T>(nkv, 2), v = random_buffer<T>(nkv, 3);
  std::vector<T> dout = random_buffer<T>(nq, 4), out(static_cast<size_t>(nq)), dq(static_cast<size_t>(nq));
  std::vector<T> dk(static_cast<size_t>(nkv)), dv(static_cast<size_t>(nkv));
  std::vector<compute_t<T>> lse(size_t(s.q_len * s.q_heads));
  for (auto _ : state) {
    cpu::attention_forward(s, q.data(), k.data(), v.data(), out.data(), lse.data());
    if (backward)
      cpu::attention_backward(s, q.data(), k.data(), v.data(), out.data(), dout.data(), lse.data(), dq.data(),
                              dk.data(), dv.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::DoNotOptimize(dq.data());
  }
  const double flops = causal_product_flops(s) * (backward ? 7.0 : 2.0);  // S, PV; backward S, dP, dV, dK, dQ
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
}

void attention_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"T", "Hq", "Hkv", "bwd"});
  for (int64_t bwd : {0, 1})
    for (auto [hq, hkv] : {std::pair<int64_t, int64_t>{9, 3}, {32, 8}})
      for (int64_t t : {512, 2048}) b->Args({t, hq, hkv, bwd});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_attention<bf16>)->Name("attention_bf16")->Apply(attention_shapes);
BENCHMARK(BM_attention<float>)->Name("attention_f32")->Apply(attention_shapes);

}  // namespace
