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

// A flat buffer of two slots and a tensor of its own, large enough for several blocks and threads.
struct Params {
  nn::FlatParameters flat;
  Tensor big;

  explicit Params(DType dt) {
    flat.data = Tensor::from_values(wave(3000, 1.0), {3000}, dt);
    flat.grad = Tensor::zeros({3000}, dt);
    flat.slots = {{"flat.a", 0, 1000}, {"flat.b", 1024, 1976}};
    big = Tensor::from_values(wave(70000, 2.0), {70000}, dt);
  }
  optim::ParamGroup group() const {
    optim::ParamGroup g;
    g.flat = {flat};
    g.params = {{"big", big}};
    return g;
  }
  // Gradients of `step`; a non-finite `poison` lands in the big tensor's element 50000.
  void set_grads(int step, double poison = 0.0) {
    std::vector<double> v = wave(70000, 3.0 + step);
    if (poison != 0.0) v[50000] = poison;
    big.set_grad(Tensor::from_values(v, {70000}, big.dtype()));
    Tensor fg = Tensor::from_values(wave(3000, 4.0 + step), {3000}, flat.grad.dtype());
    std::memcpy(flat.grad.raw_data(), fg.raw_data(), fg.nbytes());
  }
  bool grads_zero() const {
    for (const Tensor& g : {flat.grad, big.grad()})
      for (double x : g.to_doubles())
        if (x != 0.0) return false;
    return true;
  }
};

std::string bytes_of(const Tensor& t) {
  const Tensor c = ops::contiguous(t);
  return std::string(static_cast<const char*>(c.raw_data()), c.nbytes());
}

std::map<std::string, std::string> snapshot(optim::Optimizer& opt, const Params& p) {
  std::map<std::string, std::string> out;
  for (const auto& [name, t] : opt.state_dict()) out["state " + name] = bytes_of(t);
  for (const auto& [name, step] : opt.step_counts()) out["step " + name] = std::to_string(step);
  out["flat"] = bytes_of(p.flat.data);
  out["big"] = bytes_of(p.big);
  return out;
}

}  // namespace

TEST(SkipNonFiniteStep, UpdatesNothingAndZeroesTheGradients) {
  for (DType dt : {DType::f32, DType::bf16}) {
    for (std::optional<double> max_norm : {std::optional<double>{}, std::optional<double>{1.0}}) {
      for (double poison : {std::nan(""), double(INFINITY)}) {
        const std::string what =
            std::string(dtype_name(dt)) + (max_norm ? " clipped " : " unclipped ") + training::number_text(poison);
        Params p(dt);
        optim::AdamW opt({p.group()});
        if (dt == DType::bf16) opt.set_fp32_master_weights(true);
        optim::StepOptions so;
        so.max_norm = max_norm;
        so.zero_grad = true;
        so.skip_if_nonfinite = true;
        p.set_grads(0);
        EXPECT_TRUE(std::isfinite(opt.step(so))) << what;  // a finite step: state and step counts exist
        const auto before = snapshot(opt, p);
        p.set_grads(1, poison);
        const double norm = opt.step(so);
        EXPECT_FALSE(std::isfinite(norm)) << what;
        EXPECT_EQ(snapshot(opt, p), before) << what << ": weights, state and step counts unchanged";
        EXPECT_TRUE(p.grads_zero()) << what;
        // The same gradients without the option poison the weights: what the skip prevented.
        p.set_grads(1, poison);
        so.skip_if_nonfinite = false;
        opt.step(so);
        EXPECT_TRUE(training::find_nonfinite({{"big", p.big}}).has_value()) << what;
      }
    }
  }
}

// Without clipping the norm is fused into the update pass; skipping moves it into a pass of its own before the
// update, over the same blocks in the same order: the norm, the weights and the state stay the same bits.
TEST(SkipNonFiniteStep, FiniteStepsAreBitForBitThoseWithoutTheOption) {
  for (DType dt : {DType::f32, DType::bf16}) {
    for (std::optional<double> max_norm : {std::optional<double>{}, std::optional<double>{0.05}}) {
      Params a(dt), b(dt);
      optim::AdamW oa({a.group()}), ob({b.group()});
      oa.set_fp32_master_weights(dt == DType::bf16);
      ob.set_fp32_master_weights(dt == DType::bf16);
      for (int step = 0; step < 3; ++step) {
        a.set_grads(step);
        b.set_grads(step);
        optim::StepOptions so;
        so.max_norm = max_norm;
        so.zero_grad = true;
        const double na = oa.step(so);
        so.skip_if_nonfinite = true;
        const double nb = ob.step(so);
        EXPECT_EQ(na, nb) << dtype_name(dt) << " step " << step;
      }
      EXPECT_EQ(snapshot(oa, a), snapshot(ob, b)) << dtype_name(dt) << (max_norm ? " clipped" : " unclipped");
    }
  }
}

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

TEST(StepScheduler, SkippedStepsAreCountedLimitedAndSaved) {
  training::StepSchedulerOptions o;
  o.global_batch_size = 1;
  o.preemption_signals = {};
  o.skip_nonfinite_steps = true;
  o.max_consecutive_skipped_steps = 2;
  training::StepScheduler s(o, 100);
  EXPECT_TRUE(s.count_step(true));
  EXPECT_TRUE(s.count_step(true));
  EXPECT_TRUE(s.count_step(false));  // a step taken ends the run of skipped ones
  EXPECT_EQ(s.consecutive_skipped_steps(), 0);
  EXPECT_TRUE(s.count_step(true));
  EXPECT_TRUE(s.count_step(true));
  EXPECT_FALSE(s.count_step(true));  // the third in a row is one too many
  EXPECT_EQ(s.skipped_steps(), 5);
  const nlohmann::json state = s.state_dict();
  EXPECT_EQ(state["num_skipped_steps"], 5);
  EXPECT_EQ(state["consecutive_skipped_steps"], 3);
  training::StepScheduler resumed(o, 100);
  resumed.load_state_dict(state);
  EXPECT_EQ(resumed.skipped_steps(), 5);
  EXPECT_EQ(resumed.consecutive_skipped_steps(), 3);
  EXPECT_NE(error_of([&] {
              resumed.load_state_dict({{"step", 1}, {"epoch", 0}, {"num_skipped_steps", -1}});
            }).find("num_skipped_steps"),
            std::string::npos);
  // Without skipping the saved state is NeMo's.
  o.skip_nonfinite_steps = false;
  EXPECT_EQ(training::StepScheduler(o, 100).state_dict(), (nlohmann::json{{"step", 1}, {"epoch", 0}}));
  o.max_consecutive_skipped_steps = 0;
  EXPECT_NE(error_of([&] { training::StepScheduler(o, 100); }).find("max_consecutive_skipped_steps"),
            std::string::npos);
}

TEST(StepScheduler, InterruptStopsGracefullyAndIsNamed) {
  training::StepSchedulerOptions o;
  o.global_batch_size = 1;
  o.graceful_interrupt = true;  // with the default SIGTERM
  training::StepScheduler s(o, 100);
  ASSERT_TRUE(s.next_epoch());
  EXPECT_FALSE(s.is_ckpt_step());
  std::raise(SIGINT);  // the first Ctrl-C: recorded, the process goes on
  EXPECT_TRUE(s.advance_step());
  EXPECT_TRUE(s.is_ckpt_step());
  EXPECT_EQ(s.stop_signal(), SIGINT);
  EXPECT_FALSE(s.advance_step());
}

TEST(SignalGuardDeathTest, TheSecondInterruptExitsAtOnce) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  struct sigaction before {};
  sigaction(SIGINT, nullptr, &before);
  {
    training::SignalGuard guard({SIGTERM, SIGINT});
    std::raise(SIGINT);
    EXPECT_EQ(guard.received_signal(), SIGINT);
  }
  struct sigaction after {};
  sigaction(SIGINT, nullptr, &after);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
  EXPECT_EXIT(
      {
        training::SignalGuard guard({SIGINT});
        std::raise(SIGINT);
        std::raise(SIGINT);
        std::_Exit(0);  // not reached: the second SIGINT takes the default action
      },
      ::testing::KilledBySignal(SIGINT), "interrupted again: exiting now");
  // A guard without SIGINT leaves Ctrl-C alone.
  EXPECT_EXIT(
      {
        training::SignalGuard guard({SIGTERM});
        std::raise(SIGINT);
        std::_Exit(0);
      },
      ::testing::KilledBySignal(SIGINT), "");
}

TEST(CheckpointDirLock, OneHolderAtATimeAndNoFileLeftBehind) {
  TempDir tmp;
  const std::string dir = tmp / "run/ck";  // created by the lock
  const std::string pid = std::to_string(::getpid());
  {
    checkpoint::CheckpointDirLock lock(dir);
    EXPECT_FALSE(lock.taken_over().has_value());
    const auto holder = checkpoint::read_lock_holder(dir);
    ASSERT_TRUE(holder.has_value());
    EXPECT_EQ(holder->pid, ::getpid());
    EXPECT_EQ(holder->host, checkpoint::this_host_name());
    const std::string err = error_of([&] { checkpoint::CheckpointDirLock second(dir); });
    EXPECT_NE(err.find("is in use by another training run (pid " + pid + " on host "), std::string::npos) << err;
    EXPECT_NE(err.find("another checkpoint.checkpoint_dir"), std::string::npos) << err;
  }
  EXPECT_FALSE(fs::exists(fs::path(dir) / checkpoint::kLockFile));
  checkpoint::CheckpointDirLock again(dir);
  EXPECT_FALSE(again.taken_over().has_value());
}

TEST(CheckpointDirLock, AnotherProcessHoldsItUntilItDiesThenItsFileIsTakenOver) {
  TempDir tmp;
  const std::string dir = tmp / "ck";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    checkpoint::CheckpointDirLock lock(dir);
    const char byte = 1;
    if (::write(ready[1], &byte, 1) != 1) std::_Exit(1);
    for (;;) ::pause();  // held until killed
  }
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  const std::string err = error_of([&] { checkpoint::CheckpointDirLock lock(dir); });
  EXPECT_NE(err.find("(pid " + std::to_string(child) + " on host "), std::string::npos) << err;
  EXPECT_NE(err.find("kill " + std::to_string(child)), std::string::npos) << err;
  // SIGKILL: no chance to remove the file; the kernel releases the lock.
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ::close(ready[0]);
  ::close(ready[1]);
  ASSERT_TRUE(fs::exists(fs::path(dir) / checkpoint::kLockFile));
  checkpoint::CheckpointDirLock lock(dir);
  ASSERT_TRUE(lock.taken_over().has_value());
  EXPECT_EQ(lock.taken_over()->pid, child);
  EXPECT_EQ(checkpoint::read_lock_holder(dir)->pid, ::getpid());
}

TEST(CheckpointDirLock, HolderLivenessAndUnwritableDirectories) {
  const std::string host = checkpoint::this_host_name();
  EXPECT_TRUE(checkpoint::lock_holder_may_be_alive({::getpid(), host, ""}, host));
  EXPECT_TRUE(checkpoint::lock_holder_may_be_alive({::getpid(), host + "-other", ""}, host));  // cannot be checked
  const pid_t child = ::fork();
  if (child == 0) std::_Exit(0);
  ::waitpid(child, nullptr, 0);
  EXPECT_FALSE(checkpoint::lock_holder_may_be_alive({child, host, ""}, host));

  TempDir tmp;
  std::ofstream(tmp / "file") << "x";
  const std::string err = error_of([&] { checkpoint::CheckpointDirLock lock(tmp / "file/ck"); });
  EXPECT_NE(err.find("cannot create the checkpoint directory: Not a directory"), std::string::npos) << err;
  EXPECT_NE(err.find(tmp / "file/ck"), std::string::npos) << err;
  if (::geteuid() != 0) {  // root writes anywhere
    fs::create_directories(tmp / "ro");
    fs::permissions(tmp / "ro", fs::perms::owner_read | fs::perms::owner_exec);
    const std::string denied = error_of([&] { checkpoint::CheckpointDirLock lock(tmp / "ro"); });
    EXPECT_NE(denied.find("Permission denied"), std::string::npos) << denied;
    fs::permissions(tmp / "ro", fs::perms::owner_all);
  }
}
