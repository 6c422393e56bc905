// Optimizer step micro-benchmarks: one step over a bf16 parameter of SmolLM2-135M's size with bf16 gradients, as
// a bf16 mixed-precision training step runs it (fp32 master, gradient norm, zero_grad in the same pass).
#include <benchmark/benchmark.h>

#include <memory>

#include "bench_util.h"
#include "components/optim/adamw8bit.h"
#include "components/optim/optimizer.h"
#include "core/rng.h"
#include "ops/binary.h"
#include "ops/cast.h"

namespace automodel {
namespace {

// SmolLM2-135M's 134'515'008 rounded down to whole 256-element blocks: AdamW8bit keeps a tensor of another length
// in fp32, as torchao does.
constexpr int64_t kParams = 134'515'008 / 256 * 256;

Tensor bf16_tensor(int64_t n, uint64_t seed, double scale) {
  Generator gen(seed);
  return ops::to_dtype(ops::scale(randn({n}, gen), scale), DType::bf16);
}

enum class Kind { adamw, adamw8bit, adamw8bit_stochastic_round };

void BM_Optimizer_Step(benchmark::State& state, Kind kind) {
  bench::init_threads();
  Tensor p = bf16_tensor(kParams, 1, 0.02), g = bf16_tensor(kParams, 2, 1e-3);
  const optim::NamedTensors params = {{"w", p}};
  std::unique_ptr<optim::Optimizer> opt;
  if (kind == Kind::adamw) {
    optim::AdamOptions o = optim::AdamW::defaults();
    o.lr = 1e-4;
    opt = std::make_unique<optim::AdamW>(params, o);
  } else {
    optim::AdamW8bitOptions o;
    o.lr = 1e-4;
    opt = std::make_unique<optim::AdamW8bit>(params, o);
  }
  if (kind == Kind::adamw8bit_stochastic_round)
    opt->set_bf16_stochastic_round(true);
  else
    opt->set_fp32_master_weights(true);
  optim::StepOptions step;
  step.zero_grad = true;
  for (auto _ : state) {
    state.PauseTiming();
    p.set_grad(g);  // zero_grad below zeroes g: the next step sees zero gradients, the same memory traffic
    state.ResumeTiming();
    benchmark::DoNotOptimize(opt->step(step));
  }
  state.counters["params/s"] = benchmark::Counter(double(kParams), benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK_CAPTURE(BM_Optimizer_Step, adamw_fp32_master, Kind::adamw)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->MinWarmUpTime(0.5);
BENCHMARK_CAPTURE(BM_Optimizer_Step, adamw8bit_fp32_master, Kind::adamw8bit)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->MinWarmUpTime(0.5);
BENCHMARK_CAPTURE(BM_Optimizer_Step, adamw8bit_stochastic_round, Kind::adamw8bit_stochastic_round)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->MinWarmUpTime(0.5);

}  // namespace
}  // namespace automodel
