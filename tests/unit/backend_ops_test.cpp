// The backend table (kernels/backend.h) and how ops reach it: every op looks its tensors' device up once per call.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "error_of.h"
#include "kernels/backend.h"
#include "ops/activation.h"
#include "ops/backend.h"
#include "ops/binary.h"
#include "ops/matmul.h"

using namespace automodel;
using automodel::testing::error_of;

namespace {

bool has(const std::string& msg, const std::string& fragment) { return msg.find(fragment) != std::string::npos; }

// A tensor whose storage claims to be on `device` (host bytes underneath): how a CUDA tensor would reach an op.
Tensor on_device(const Shape& shape, Device device) {
  static std::vector<float> bytes(1024);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = Storage::wrap(bytes.data(), bytes.size() * sizeof(float), {}, device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  return Tensor(impl);
}

}  // namespace

TEST(BackendTable, TheCpuBackendFillsEveryEntry) {
  const kernels::Backend& cpu = kernels::cpu_backend();
  EXPECT_EQ(std::string(cpu.name), "cpu");
  EXPECT_EQ(kernels::missing_kernels(cpu), std::vector<std::string>{});
  EXPECT_EQ(&ops::backend_for(cpu_device(), "test"), &cpu);
}

TEST(BackendTable, AnOpOnACudaTensorInABuildWithoutCudaIsAnErrorNamingTheOp) {
  const Device gpu{DeviceType::cuda, 0};
  Tensor x = on_device({2, 3}, gpu);
  for (auto [op, run] : std::vector<std::pair<std::string, std::function<void()>>>{
           {"silu", [&] { ops::silu(x); }}, {"mul", [&] { ops::mul(x, x); }}, {"matmul", [&] {
                                                                                 ops::matmul(x, x, false, true);
                                                                               }}}) {
    const std::string err = error_of(run);
    EXPECT_TRUE(has(err, op + ": the tensors are on cuda:0, but this build has no CUDA backend")) << err;
  }
}

TEST(BackendTable, TensorsOnDifferentDevicesAreAnError) {
  Tensor a = Tensor::ones({2, 3});
  Tensor b = on_device({2, 3}, Device{DeviceType::cuda, 0});
  const std::string err = error_of([&] { ops::add(a, b); });
  EXPECT_TRUE(has(err, "add: tensors on different devices (cpu and cuda:0)")) << err;
}
