// The backend table (kernels/backend.h), tested as ggml's test-backend-ops tests its backends: every entry of the
// table, forward and backward, runs on every backend this build has (targets()) on random inputs, and its outputs
// are compared with a plain reference written here (loops in double over the inputs as the kernel reads them) and,
// for a backend other than the CPU, with the CPU backend's outputs. An entry without a case here fails the test.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "backend_ops_cases.h"
#include "core/tensor.h"
#include "error_of.h"
#include "kernels/backend.h"
#include "ops/activation.h"
#include "ops/backend.h"
#include "ops/binary.h"
#include "ops/matmul.h"

using namespace automodel;
using namespace automodel::backend_test;
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

// got within tol of want, relative to max(1, |want|); NaN where want is NaN, the same infinity where it is one.
void expect_close(const std::string& where, const std::vector<double>& got, const std::vector<double>& want,
                  double tol) {
  ASSERT_EQ(got.size(), want.size()) << where;
  int reported = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    const bool ok = std::isnan(w)   ? std::isnan(g)
                    : std::isinf(w) ? g == w
                                    : std::abs(g - w) <= tol * std::max(1.0, std::abs(w));
    if (!ok && reported++ < 5) ADD_FAILURE() << where << "[" << i << "]: got " << g << ", want " << w;
  }
}

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  for (const Case& c : all_cases()) names.push_back(c.kernel);
  return names;
}

}  // namespace

TEST(BackendTable, TheCpuBackendFillsEveryEntry) {
  const kernels::Backend& cpu = kernels::cpu_backend();
  EXPECT_EQ(std::string(cpu.name), "cpu");
  EXPECT_EQ(kernels::missing_kernels(cpu), std::vector<std::string>{});
  EXPECT_EQ(&ops::backend_for(cpu_device(), "test"), &cpu);
}

TEST(BackendTable, EveryBackendFillsEveryEntry) {
  for (const Target& t : targets())
    EXPECT_EQ(kernels::missing_kernels(*t.backend), std::vector<std::string>{}) << t.name;
}

TEST(BackendTable, EveryEntryHasACaseInThisTest) {
  std::multiset<std::string> covered;
  for (const Case& c : all_cases()) covered.insert(c.kernel);
  std::vector<std::string> missing, unknown, repeated;
  for (const std::string& name : kernels::kernel_names())
    if (!covered.count(name)) missing.push_back(name);
  const std::vector<std::string>& names = kernels::kernel_names();
  for (const std::string& name : covered) {
    if (std::find(names.begin(), names.end(), name) == names.end()) unknown.push_back(name);
    if (covered.count(name) > 1) repeated.push_back(name);
  }
  EXPECT_TRUE(missing.empty()) << "table entries without a case in tests/unit/backend_ops_cases*.cpp (add one): "
                               << ::testing::PrintToString(missing);
  EXPECT_TRUE(unknown.empty()) << "cases for entries the table does not have: " << ::testing::PrintToString(unknown);
  EXPECT_TRUE(repeated.empty()) << "entries with more than one case: " << ::testing::PrintToString(repeated);
}

class BackendOps : public ::testing::TestWithParam<std::string> {};

TEST_P(BackendOps, MatchesTheReferenceOnEveryBackend) {
  const std::vector<Case> cases = all_cases();
  const Case& c = *std::find_if(cases.begin(), cases.end(), [&](const Case& k) { return k.kernel == GetParam(); });
  const std::vector<Target> all = targets();
  for (DType dt : c.dtypes) {
    std::vector<Check> first;  // the first target's (the CPU's) outputs
    for (const Target& t : all) {
      const std::vector<Check> checks = c.run(t, dt);
      ASSERT_FALSE(checks.empty()) << c.kernel << " checks nothing";
      for (size_t i = 0; i < checks.size(); ++i) {
        const Check& k = checks[i];
        const std::string where = c.kernel + " " + dtype_name(dt) + " on " + t.name + ": " + k.what;
        expect_close(where, k.got, k.want, k.tol);
        if (&t != &all.front()) expect_close(where + " (against " + all.front().name + ")", k.got, first[i].got, k.tol);
      }
      if (&t == &all.front()) first = checks;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryEntry, BackendOps, ::testing::ValuesIn(case_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

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
