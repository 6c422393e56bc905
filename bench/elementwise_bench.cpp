// Memory-bound elementwise kernels: achieved bandwidth (GB/s = bytes read + written per second,
// counted once per tensor) for add, swiglu forward / backward, softmax over rows of 49152 (the
// vocabulary of a 135M Llama) and sum. Tensors are larger than the last-level cache.
// Threads: OMP_NUM_THREADS.
#include <benchmark/benchmark.h>

#include <vector>

#include "bench_util.h"
#include "core/grad_node.h"
#include "core/rng.h"
#include "core/threads.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/binary.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/softmax.h"
#include "ops/binary.h"

using namespace automodel;
using bench::init_threads;
using bench::random_buffer;

namespace {

constexpr int64_t kN = int64_t(1) << 24;        // 16M elements: 64 MiB per fp32 tensor (L3: 32 MiB)
constexpr int64_t kVocab = 49152, kRows = 256;  // 48 MiB per fp32 tensor

void set_bandwidth(benchmark::State& state, double bytes_per_iter) {
  state.counters["GB/s"] =
      benchmark::Counter(bytes_per_iter * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["threads"] = num_threads();
}

template <class T>
void BM_Elementwise_AddSameShape(benchmark::State& state) {
  init_threads();
  auto a = random_buffer<T>(kN, 1), b = random_buffer<T>(kN, 2);
  std::vector<T> out(static_cast<size_t>(kN));
  for (auto _ : state) {
    cpu::binary_forward(cpu::BinaryOp::add, a.data(), b.data(), out.data(), kN);
    benchmark::DoNotOptimize(out.data());
  }
  set_bandwidth(state, 3.0 * double(kN) * sizeof(T));
}

// The op, not the kernel: allocation (cached) and checks included.
void BM_Elementwise_AddOpRowBroadcast(benchmark::State& state) {
  init_threads();
  Generator gen(3);
  Tensor a = randn({kN / 4096, 4096}, gen), bias = randn({4096}, gen);
  NoGradGuard no_grad;
  for (auto _ : state) {
    Tensor out = ops::add(a, bias);
    benchmark::DoNotOptimize(out.raw_data());
  }
  set_bandwidth(state, 2.0 * double(kN) * 4);
}

template <class T>
void BM_Elementwise_SwigluForward(benchmark::State& state) {
  init_threads();
  auto gate = random_buffer<T>(kN, 1), up = random_buffer<T>(kN, 2);
  std::vector<T> out(static_cast<size_t>(kN));
  for (auto _ : state) {
    cpu::swiglu_forward(gate.data(), up.data(), out.data(), kN);
    benchmark::DoNotOptimize(out.data());
  }
  set_bandwidth(state, 3.0 * double(kN) * sizeof(T));
}

template <class T>
void BM_Elementwise_SwigluBackward(benchmark::State& state) {
  init_threads();
  auto gate = random_buffer<T>(kN, 1), up = random_buffer<T>(kN, 2), g = random_buffer<T>(kN, 3);
  std::vector<T> ggate(static_cast<size_t>(kN)), gup(static_cast<size_t>(kN));
  for (auto _ : state) {
    cpu::swiglu_backward(gate.data(), up.data(), g.data(), ggate.data(), gup.data(), kN);
    benchmark::DoNotOptimize(ggate.data());
    benchmark::DoNotOptimize(gup.data());
  }
  set_bandwidth(state, 5.0 * double(kN) * sizeof(T));
}

template <class T>
void BM_Elementwise_SoftmaxRows49152(benchmark::State& state) {
  init_threads();
  auto x = random_buffer<T>(kRows * kVocab, 1);
  std::vector<T> y(x.size());
  for (auto _ : state) {
    cpu::softmax_forward(x.data(), y.data(), kRows, kVocab, 1, false);
    benchmark::DoNotOptimize(y.data());
  }
  set_bandwidth(state, 2.0 * double(kRows * kVocab) * sizeof(T));
}

template <class T>
void BM_Elementwise_SoftmaxBackwardRows49152(benchmark::State& state) {
  init_threads();
  auto y = random_buffer<T>(kRows * kVocab, 1), g = random_buffer<T>(kRows * kVocab, 2);
  std::vector<T> gx(y.size());
  for (auto _ : state) {
    cpu::softmax_backward(y.data(), g.data(), gx.data(), kRows, kVocab, 1, false);
    benchmark::DoNotOptimize(gx.data());
  }
  set_bandwidth(state, 3.0 * double(kRows * kVocab) * sizeof(T));
}

// Sum of everything (one long run) and over dim 0 of [kN / 1024, 1024] (a bias gradient).
template <class T>
void BM_Elementwise_SumAll(benchmark::State& state) {
  init_threads();
  auto x = random_buffer<T>(kN, 1);
  const int64_t shape[1] = {kN};
  const uint8_t reduce[1] = {1};
  T out;
  for (auto _ : state) {
    cpu::sum_forward(x.data(), shape, 1, reduce, 1.0, &out);
    benchmark::DoNotOptimize(out);
  }
  set_bandwidth(state, double(kN) * sizeof(T));
}

template <class T>
void BM_Elementwise_SumDim0(benchmark::State& state) {
  init_threads();
  auto x = random_buffer<T>(kN, 1);
  const int64_t shape[2] = {kN / 1024, 1024};
  const uint8_t reduce[2] = {1, 0};
  std::vector<T> out(1024);
  for (auto _ : state) {
    cpu::sum_forward(x.data(), shape, 2, reduce, 1.0, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  set_bandwidth(state, double(kN) * sizeof(T));
}

}  // namespace

BENCHMARK(BM_Elementwise_AddSameShape<float>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Elementwise_AddSameShape<bf16>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Elementwise_AddOpRowBroadcast)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Elementwise_SwigluForward<float>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Elementwise_SwigluForward<bf16>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Elementwise_SwigluBackward<float>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Elementwise_SwigluBackward<bf16>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Elementwise_SoftmaxRows49152<float>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Elementwise_SoftmaxRows49152<bf16>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Elementwise_SoftmaxBackwardRows49152<float>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Elementwise_SumAll<float>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Elementwise_SumAll<bf16>)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Elementwise_SumDim0<float>)->UseRealTime()->Unit(benchmark::kMillisecond);
