// Run safety: a step with a non-finite gradient norm is skipped without touching weights, state or step counts (and
// finite steps are bit for bit those of the plain step); non-finite values are found by tensor and element; the
// second Ctrl-C exits at once; one process at a time holds a checkpoint directory, and a dead one's lock is taken over.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "components/checkpoint/checkpoint_dir.h"
#include "components/optim/optimizer.h"
#include "components/training/nonfinite.h"
#include "components/training/signal.h"
#include "components/training/step_scheduler.h"
#include "error_of.h"
#include "ops/view.h"
#include "temp_dir.h"

using namespace automodel;
using automodel::testing::error_of;
using automodel::testing::TempDir;
namespace fs = std::filesystem;

namespace {

std::vector<double> wave(int64_t n, double phase) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = 0.01 * std::sin(0.37 * double(i) + phase);
  return v;
}

}  // namespace

TEST(FindNonFinite, NamesTheFirstTensorAndElement) {
  std::vector<double> values = wave(100000, 0.5);
  const Tensor finite = Tensor::from_values(values, {100000});
  values[70001] = -INFINITY;
  values[90000] = std::nan("");
  const Tensor f32 = Tensor::from_values(values, {100000});
  EXPECT_FALSE(training::find_nonfinite({{"a", finite}}).has_value());
  const auto bad = training::find_nonfinite({{"a", finite}, {"b", f32}});
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->tensor, "b");
  EXPECT_EQ(bad->index, 70001);
  EXPECT_EQ(bad->value, -INFINITY);
  for (DType dt : {DType::bf16, DType::f64}) {
    const auto found = training::find_nonfinite({{"x", Tensor::from_values({1.0, std::nan(""), 2.0}, {3}, dt)}});
    ASSERT_TRUE(found.has_value()) << dtype_name(dt);
    EXPECT_EQ(found->index, 1);
    EXPECT_TRUE(std::isnan(found->value));
  }
  // The largest finite values are finite.
  const double max_f32 = std::numeric_limits<float>::max();
  EXPECT_FALSE(training::find_nonfinite({{"m", Tensor::from_values({max_f32, -max_f32}, {2})}}).has_value());
  EXPECT_EQ(training::number_text(std::nan("")), "nan");
  EXPECT_EQ(training::number_text(-INFINITY), "-inf");
  EXPECT_EQ(training::number_text(0.5), "0.5");
}
