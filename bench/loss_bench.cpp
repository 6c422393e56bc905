// The LM-head loss, forward + backward, as a training step runs it: MaskedCrossEntropy over full logits
// (ops::linear for the LM-head GEMM, the loss, then the backward GEMMs) against FusedLinearCrossEntropy
// (no [tokens, vocab] buffer), at SmolLM2-135M (hidden 576, vocab 49152) and Llama-3.2-1B (hidden 2048,
// vocab 128256) shapes, 512 and 2048 tokens, f32 and bf16; "_frozen" keeps the weight frozen (LoRA).
// The weight's .grad is a zeroed buffer that persists, as the recipe's flat gradient buffers do: the masked
// path's LM-head backward adds d(weight) into it, the fused loss too (set_weight_grad_in_place, as the recipe).
// Counters: GFLOP/s of the three LM-head GEMMs (6 * tokens * vocab * hidden), peak_MB = the caching
// allocator's peak growth in one step. Threads: OMP_NUM_THREADS. Llama shapes take seconds per step:
// --benchmark_filter=loss_smol for the small ones.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "autograd/engine.h"
#include "bench_util.h"
#include "components/loss/cross_entropy.h"
#include "core/allocator.h"
#include "core/rng.h"
#include "core/threads.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "ops/matmul.h"

using namespace automodel;
using bench::init_threads;

namespace {

enum class Loss { masked, fused };

// Labels in [0, vocab), none ignored (the benchmark harness trains on every token).
Tensor all_labels(int64_t n, int64_t vocab) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  uint64_t s = 88172645463325252ULL;
  for (auto& x : v) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    x = int64_t(s % uint64_t(vocab));
  }
  return Tensor::from_vector<int64_t>(v, {n});
}

template <Loss kind, DType dt, bool kTrainWeight>
void BM_lm_head_loss(benchmark::State& state) {
  init_threads();
  const int64_t N = state.range(0), H = state.range(1), V = state.range(2), chunk = state.range(3);
  Generator gen(7);
  Tensor h = ops::to_dtype(randn({N, H}, gen), dt).set_requires_grad(true);
  Tensor w = ops::to_dtype(ops::scale(randn({V, H}, gen), 0.05), dt).set_requires_grad(kTrainWeight);
  if (kTrainWeight) w.set_grad(Tensor::zeros({V, H}, dt));
  Tensor labels = all_labels(N, V);
  auto& alloc = CachingAllocator::cpu();
  size_t peak = 0;
  for (auto _ : state) {
    h.set_grad(Tensor());
    const size_t before = alloc.stats().current_bytes;
    alloc.reset_peak();
    Tensor loss = kind == Loss::masked
                      ? loss::MaskedCrossEntropy()(ops::linear(h, w), labels)
                      : loss::FusedLinearCrossEntropy(chunk).set_weight_grad_in_place(true)(h, w, labels);
    autograd::backward(loss);
    benchmark::DoNotOptimize(h.grad().raw_data());
    peak = std::max(peak, alloc.stats().peak_bytes - before);
  }
  const double gemms = kTrainWeight ? 6.0 : 4.0;
  state.counters["GFLOP/s"] = benchmark::Counter(
      gemms * double(N) * double(V) * double(H) * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["peak_MB"] = double(peak) / 1e6;
  state.counters["threads"] = num_threads();
}

// {tokens, hidden, vocab, chunk (fused; 0: from the default budget)}
void smol(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "H", "V", "chunk"})->Args({512, 576, 49152, 0})->Args({2048, 576, 49152, 0});
  b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(1.0);
}
void llama(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "H", "V", "chunk"})
      ->Args({512, 2048, 128256, 0})
      ->Args({2048, 2048, 128256, 0})
      ->Args({512, 2048, 128256, 256})
      ->Args({512, 2048, 128256, 512});
  b->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(2);
}

#define AM_LOSS_BENCH(kind, dt, train, shapes, name) \
  BENCHMARK(BM_lm_head_loss<Loss::kind, DType::dt, train>)->Name(name)->Apply(shapes)

AM_LOSS_BENCH(masked, bf16, true, smol, "loss_smol_masked_bf16");
AM_LOSS_BENCH(fused, bf16, true, smol, "loss_smol_fused_bf16");
AM_LOSS_BENCH(masked, f32, true, smol, "loss_smol_masked_f32");
AM_LOSS_BENCH(fused, f32, true, smol, "loss_smol_fused_f32");
AM_LOSS_BENCH(masked, bf16, false, smol, "loss_smol_masked_bf16_frozen");
AM_LOSS_BENCH(fused, bf16, false, smol, "loss_smol_fused_bf16_frozen");
AM_LOSS_BENCH(masked, bf16, true, llama, "loss_llama_masked_bf16");
AM_LOSS_BENCH(fused, bf16, true, llama, "loss_llama_fused_bf16");
AM_LOSS_BENCH(masked, f32, true, llama, "loss_llama_masked_f32");
AM_LOSS_BENCH(fused, f32, true, llama, "loss_llama_fused_f32");
AM_LOSS_BENCH(masked, bf16, false, llama, "loss_llama_masked_bf16_frozen");
AM_LOSS_BENCH(fused, bf16, false, llama, "loss_llama_fused_bf16_frozen");

}  // namespace
