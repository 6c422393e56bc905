// components/training: the StepScheduler's step arithmetic against tables worked out by hand from NeMo
// Automodel's formulas, resume through state_dict, the stop-signal flag, JSONL metric logs and the progress bar.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <sstream>
#include <tuple>

#include "components/training/metrics.h"
#include "components/training/progress.h"
#include "components/training/signal.h"
#include "components/training/step_scheduler.h"
#include "components/training/training_state.h"
#include "error_of.h"
#include "temp_dir.h"

using namespace automodel;
using namespace automodel::training;
using automodel::testing::error_of;
using nlohmann::json;

namespace {

// One optimizer step as the recipe sees it inside the loop body.
struct Row {
  int64_t step, epoch, micro_batches;
  bool val, ckpt, last;
  int64_t saved_step;  // state_dict()["step"]
  bool operator==(const Row&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Row& r) {
  return os << "{step " << r.step << ", epoch " << r.epoch << ", micro " << r.micro_batches << ", val " << r.val
            << ", ckpt " << r.ckpt << ", last " << r.last << ", saved_step " << r.saved_step << "}";
}

// Drives a scheduler as the recipe does (NeMo's `for epoch in epochs: for batches in scheduler:`).
std::vector<Row> run(StepScheduler& s) {
  std::vector<Row> rows;
  while (s.next_epoch()) {
    do {
      // The recipe asks is_val_step before is_ckpt_step, as NeMo's loop does.
      bool val = s.is_val_step();
      bool ckpt = s.is_ckpt_step();
      rows.push_back({s.step(), s.epoch(), s.micro_batches_this_step(), val, ckpt, s.is_last_step(),
                      s.state_dict()["step"].get<int64_t>()});
    } while (s.advance_step());
  }
  return rows;
}

StepSchedulerOptions options(int64_t gbs, int64_t lbs) {
  StepSchedulerOptions o;
  o.global_batch_size = gbs;
  o.local_batch_size = lbs;
  o.preemption_signals = {};
  return o;
}

}  // namespace

// gbs 4 / lbs 1 -> grad_acc 4; 10 micro-batches -> epoch_len ceil(10/4) = 3 (the third step has 2 micro-batches);
// num_epochs 2 -> max_steps 6; ckpt_every_steps unset -> epoch_len = 3; val_every_steps 2.
TEST(StepScheduler, EpochsWithPartialTrailingStep) {
  StepSchedulerOptions o = options(4, 1);
  o.num_epochs = 2;
  o.val_every_steps = 2;
  StepScheduler s(o, 10);
  EXPECT_EQ(s.grad_acc_steps(), 4);
  EXPECT_EQ(s.epoch_len(), 3);
  EXPECT_EQ(s.max_steps(), 6);
  EXPECT_EQ(s.ckpt_every_steps(), 3);
  // val: step % 2 == 1, or a checkpoint step. ckpt: step % 3 == 2 (also every epoch's last batch). last: step 5.
  std::vector<Row> expected = {
      {0, 0, 4, false, false, false, 1}, {1, 0, 4, true, false, false, 2},  {2, 0, 2, true, true, false, 3},
      {3, 1, 4, true, false, false, 4},  {4, 1, 4, false, false, false, 5}, {5, 1, 2, true, true, true, 6},
  };
  EXPECT_EQ(run(s), expected);
  EXPECT_EQ(s.step(), 6);
  EXPECT_EQ(s.epoch(), 2);
  EXPECT_TRUE(s.finished());
}

// grad_acc 2, 8 micro-batches -> epoch_len 4; max_steps 5 -> num_epochs ceil(5/4) = 2; ckpt every 2 steps, no
// epoch-boundary checkpoints, no validation on checkpoints. max_steps stops the run inside epoch 1, and the epoch
// is not counted as finished (NeMo's iterator returns before its epoch += 1).
TEST(StepScheduler, MaxStepsStopsInsideAnEpoch) {
  StepSchedulerOptions o = options(2, 1);
  o.max_steps = 5;
  o.ckpt_every_steps = 2;
  o.save_checkpoint_every_epoch = false;
  o.validate_on_checkpoint = false;
  StepScheduler s(o, 8);
  EXPECT_EQ(s.epoch_len(), 4);
  EXPECT_EQ(s.num_epochs(), 2);
  std::vector<Row> expected = {
      {0, 0, 2, false, false, false, 1}, {1, 0, 2, false, true, false, 2}, {2, 0, 2, false, false, false, 3},
      {3, 0, 2, false, true, false, 4},  {4, 1, 2, false, true, true, 5},
  };
  EXPECT_EQ(run(s), expected);
  EXPECT_EQ(s.step(), 5);
  EXPECT_EQ(s.epoch(), 1);
}

// Epochs run out before max_steps: the last batch of the last epoch is the last step (and so a checkpoint step).
TEST(StepScheduler, EpochsRunOutBeforeMaxSteps) {
  StepSchedulerOptions o = options(1, 1);
  o.max_steps = 100;
  o.num_epochs = 2;
  o.ckpt_every_steps = 50;
  o.save_checkpoint_every_epoch = false;
  StepScheduler s(o, 3);
  std::vector<Row> expected = {
      {0, 0, 1, false, false, false, 1}, {1, 0, 1, false, false, false, 2}, {2, 0, 1, false, false, false, 3},
      {3, 1, 1, false, false, false, 4}, {4, 1, 1, false, false, false, 5}, {5, 1, 1, true, true, true, 6},
  };
  EXPECT_EQ(run(s), expected);
  EXPECT_EQ(s.epoch(), 2);
}

// The defaults: nothing but batch sizes -> num_epochs 10, max_steps 10 * epoch_len, a checkpoint every epoch.
TEST(StepScheduler, Defaults) {
  StepScheduler s(options(6, 2), 7);  // grad_acc 3, epoch_len ceil(7/3) = 3
  EXPECT_EQ(s.grad_acc_steps(), 3);
  EXPECT_EQ(s.epoch_len(), 3);
  EXPECT_EQ(s.num_epochs(), 10);
  EXPECT_EQ(s.max_steps(), 30);
  EXPECT_EQ(s.ckpt_every_steps(), 3);
  EXPECT_EQ(s.micro_batches_this_step(), 3);
  std::vector<Row> rows = run(s);
  ASSERT_EQ(rows.size(), 30u);
  EXPECT_EQ(rows[2].micro_batches, 1);  // 7 = 3 + 3 + 1
  int64_t ckpts = 0;
  for (const Row& r : rows) ckpts += r.ckpt;
  EXPECT_EQ(ckpts, 10);
  EXPECT_EQ(rows.back().saved_step, 30);  // min(max_steps, step + 1)
}

// A run stopped at any checkpoint and resumed from its state_dict takes exactly the remaining steps of an
// uninterrupted run, including checkpoints taken on an epoch's last (full or partial) step.
TEST(StepScheduler, ResumeFromStateDictContinuesTheSameSequence) {
  for (auto [gbs, micro, max_steps, num_epochs] :
       {std::tuple<int64_t, int64_t, int64_t, int64_t>{2, 8, 11, 0}, {4, 10, 0, 3}, {3, 3, 5, 0}, {1, 4, 0, 2}}) {
    StepSchedulerOptions o = options(gbs, 1);
    if (max_steps) o.max_steps = max_steps;
    if (num_epochs) o.num_epochs = num_epochs;
    o.ckpt_every_steps = 1;
    StepScheduler full(o, micro);
    const std::vector<Row> all = run(full);
    for (size_t k = 0; k + 1 < all.size(); ++k) {
      StepScheduler first(o, micro);
      json state;
      while (first.next_epoch() && state.is_null()) {
        do {
          if (first.step() == int64_t(k)) {
            state = first.state_dict();
            break;
          }
        } while (first.advance_step());
      }
      StepScheduler resumed(o, micro);
      resumed.load_state_dict(json::parse(state.dump()));
      std::vector<Row> rest = run(resumed);
      EXPECT_EQ(rest, std::vector<Row>(all.begin() + int64_t(k) + 1, all.end())) << "gbs " << gbs << " k " << k;
      EXPECT_EQ(resumed.step(), full.step());
    }
  }
}

TEST(StepScheduler, StepsIntoEpochAfterResume) {
  StepSchedulerOptions o = options(2, 1);  // epoch_len 4
  StepScheduler s(o, 8);
  s.load_state_dict({{"step", 6}, {"epoch", 1}});
  EXPECT_EQ(s.steps_into_epoch(), 2);              // skip 2 * grad_acc = 4 micro-batches of epoch 1
  s.load_state_dict({{"step", 4}, {"epoch", 0}});  // saved on epoch 0's last step
  EXPECT_TRUE(s.next_epoch());
  EXPECT_EQ(s.epoch(), 1);
  EXPECT_EQ(s.steps_into_epoch(), 0);
}

TEST(StepScheduler, InvalidOptionsAreErrorsWithHints) {
  EXPECT_NE(error_of([] {
              StepScheduler(options(5, 2), 4);
            }).find("global_batch_size (5) must be divisible by local_batch_size * dp_size (2 * 1)"),
            std::string::npos);
  EXPECT_NE(error_of([] { StepScheduler(options(0, 1), 4); }).find("global_batch_size must be greater than 0"),
            std::string::npos);
  StepSchedulerOptions o = options(2, 1);
  // The value given is named, not num_epochs = ceil(max_steps / epoch_len) derived from it (NeMo's order).
  for (int64_t bad : {0, -5}) {
    o.max_steps = bad;
    const std::string err = error_of([&] { StepScheduler(o, 4); });
    EXPECT_NE(err.find("max_steps must be greater than 0, got " + std::to_string(bad)), std::string::npos) << err;
    EXPECT_EQ(err.find("num_epochs must"), std::string::npos) << err;
  }
  o.num_epochs = 1;
  EXPECT_NE(error_of([&] { StepScheduler(o, 4); }).find("max_steps must be greater than 0"), std::string::npos);
  o = options(2, 1);
  o.num_epochs = 0;
  EXPECT_NE(error_of([&] { StepScheduler(o, 4); }).find("num_epochs must be greater than 0"), std::string::npos);
  o = options(2, 1);
  o.val_every_steps = -1;
  EXPECT_NE(error_of([&] { StepScheduler(o, 4); }).find("val_every_steps"), std::string::npos);
  EXPECT_NE(error_of([] { StepScheduler(options(2, 1), 0); }).find("yields no batches"), std::string::npos);
  StepScheduler s(options(2, 1), 4);
  EXPECT_NE(error_of([&] { s.load_state_dict({{"step", 1}}); }).find("'epoch'"), std::string::npos);
}

TEST(SignalGuard, RaiseSetsTheFlagAndRestoresThePreviousHandler) {
  EXPECT_EQ(resolve_signal("SIGTERM"), SIGTERM);
  EXPECT_EQ(resolve_signal(" term "), SIGTERM);
  EXPECT_EQ(resolve_signal("usr1"), SIGUSR1);
  EXPECT_EQ(resolve_signal("15"), 15);
  EXPECT_NE(error_of([] { resolve_signal("SIGFOO"); }).find("unknown signal name"), std::string::npos);
  EXPECT_NE(error_of([] { resolve_signal("9"); }).find("invalid signal number"), std::string::npos);
  EXPECT_NE(error_of([] { SignalGuard({SIGUSR1, SIGUSR1}); }).find("duplicate"), std::string::npos);

  struct sigaction before {};
  sigaction(SIGUSR1, nullptr, &before);
  {
    SignalGuard guard({SIGUSR1});
    EXPECT_FALSE(guard.received());
    std::raise(SIGUSR1);  // would end the process without the guard
    EXPECT_TRUE(guard.received());
    SignalGuard later({SIGUSR2});
    EXPECT_FALSE(later.received());
  }
  struct sigaction after {};
  sigaction(SIGUSR1, nullptr, &after);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
}

TEST(StepScheduler, SigtermStopsAfterACheckpointStep) {
  StepSchedulerOptions o = options(1, 1);  // preemption_signals: SIGTERM, as NeMo
  o.preemption_signals = {SIGTERM};
  o.ckpt_every_steps = 100;
  o.val_every_steps = 1;
  StepScheduler s(o, 10);
  ASSERT_TRUE(s.next_epoch());
  EXPECT_TRUE(s.is_val_step());    // val_every_steps 1
  EXPECT_FALSE(s.is_ckpt_step());  // polled for step 0
  std::raise(SIGTERM);
  EXPECT_FALSE(s.is_ckpt_step());  // one poll per step: every check within a step agrees
  EXPECT_TRUE(s.advance_step());
  EXPECT_TRUE(s.is_ckpt_step());  // step 1 sees the signal
  EXPECT_TRUE(s.sigterm_received());
  EXPECT_FALSE(s.is_val_step());  // no validation on the way out
  EXPECT_EQ(s.state_dict(), (json{{"step", 2}, {"epoch", 0}}));
  EXPECT_FALSE(s.advance_step());
  EXPECT_TRUE(s.finished());
  EXPECT_FALSE(s.next_epoch());
  EXPECT_EQ(s.step(), 2);
}

TEST(Metrics, JsonlWriterWritesNeMoRecordsOneLineEach) {
  automodel::testing::TempDir dir;
  const std::string path = dir / "logs/training.jsonl";
  {
    JsonlWriter w(path, /*append=*/false);
    w.write(metrics_record(0, 0, {{"loss", 2.5}, {"grad_norm", 1.25}, {"lr", 1e-4}, {"tps", 100.0}},
                           "2025-01-02T03:04:05.678Z"));
    // Flushed per line: readable before the writer closes.
    std::ifstream in(path);
    std::string line;
    ASSERT_TRUE(std::getline(in, line));
    EXPECT_EQ(line,
              R"({"step":0,"epoch":0,"timestamp":"2025-01-02T03:04:05.678Z","loss":2.5,"grad_norm":1.25,"lr":0.0001,)"
              R"("tps":100.0})");
    w.write(metrics_record(1, 0, {{"loss", std::nan("")}}, "t"));
  }
  {
    JsonlWriter w(path, /*append=*/true);
    w.write(metrics_record(2, 1, {{"val_loss", 1.0}}, "t"));
  }
  std::ifstream in(path);
  std::vector<json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_TRUE(lines[1]["loss"].is_null());
  EXPECT_EQ(lines[2]["step"], 2);
  JsonlWriter truncating(path, /*append=*/false);
  EXPECT_EQ(std::filesystem::file_size(path), 0u);
}

TEST(Metrics, TimestampAndLogLines) {
  using namespace std::chrono;
  auto t = sys_days{year{2025} / 1 / 2} + hours{3} + minutes{4} + seconds{5} + milliseconds{678};
  EXPECT_EQ(iso_timestamp_utc(t), "2025-01-02T03:04:05.678Z");
  nlohmann::ordered_json r = metrics_record(3, 0,
                                            {{"loss", 2.34567},
                                             {"grad_norm", 1.5},
                                             {"lr", 1e-4},
                                             {"mem", 0.5},
                                             {"tps", 1234.5},
                                             {"tps_per_gpu", 1234.5},
                                             {"num_label_tokens", 77}});
  EXPECT_EQ(format_train_line(r),
            "step 3 | epoch 0 | loss 2.3457 | grad_norm 1.5000 | lr 1.00e-04 | mem 0.50 GiB | tps 1234.50(1234.50/gpu) "
            "| num_label_tokens 77");
  nlohmann::ordered_json v = metrics_record(9, 1, {{"val_loss", 1.25}, {"lr", 2e-5}, {"num_label_tokens", 12}});
  EXPECT_EQ(format_val_line(v),
            "[val] name \"default\" | step 9 | epoch 1 | loss 1.2500 | lr 2.00e-05 | num_label_tokens 12");
}

TEST(Progress, TerminalBarRedrawsOneLine) {
  std::ostringstream out;
  double clock = 0;
  ProgressOptions o;
  o.total_steps = 10;
  o.is_tty = true;
  o.bar_width = 10;
  o.now = [&] { return clock; };
  {
    ProgressReporter bar(out, o);
    clock = 10;
    bar.update({/*step=*/4, /*epoch=*/0, /*loss=*/2.0, /*lr=*/1e-4, /*tps=*/512.4, std::nullopt});
    EXPECT_EQ(out.str(), "\rTraining  50%|#####     | 5/10 [00:10<00:10, loss=2.0000, lr=1.00e-04, tps=512]\x1b[K");
    clock = 20;
    bar.update({9, 1, 1.5, 1e-5, 600, std::nullopt});
    EXPECT_EQ(out.str().find('\n'), std::string::npos);
  }
  EXPECT_NE(out.str().find("\rTraining 100%|##########| 10/10 [00:20<00:00, loss=1.5000"), std::string::npos);
  EXPECT_EQ(out.str().back(), '\n');  // closed
}

TEST(Progress, PlainLinesWhenNotATerminal) {
  std::ostringstream out;
  double clock = 0;
  ProgressOptions o;
  o.total_steps = 5;
  o.initial_step = 0;
  o.log_every = 2;
  o.now = [&] { return clock; };
  ProgressReporter p(out, o);
  for (int64_t step = 0; step < 5; ++step) {
    clock += 2;
    p.update({step, 0, 1.0 / double(step + 1), 1e-3, 100, step == 1 ? std::optional<double>(0.5) : std::nullopt});
  }
  p.close();
  EXPECT_EQ(out.str(),
            "Training step 2/5 | epoch 0 | loss 0.5000 | grad_norm 0.5000 | lr 1.00e-03 | tps 100 | elapsed 00:04 | "
            "eta 00:06\n"
            "Training step 4/5 | epoch 0 | loss 0.2500 | lr 1.00e-03 | tps 100 | elapsed 00:08 | eta 00:02\n"
            "Training step 5/5 | epoch 0 | loss 0.2000 | lr 1.00e-03 | tps 100 | elapsed 00:10 | eta 00:00\n");
  EXPECT_EQ(format_duration(3725), "1:02:05");
}

TEST(Callbacks, InvokeCallsEveryHookInOrder) {
  Callbacks callbacks;
  std::vector<std::string> calls;
  callbacks.on_step_end.push_back([&](const TrainingState& s) { calls.push_back("a" + std::to_string(s.step)); });
  callbacks.on_step_end.push_back([&](const TrainingState& s) { calls.push_back("b" + std::to_string(s.step)); });
  callbacks.on_checkpoint.push_back(
      [&](const TrainingState& s, const std::string& path) { calls.push_back(path + std::to_string(s.epoch)); });
  TrainingState state;
  state.step = 3;
  state.epoch = 1;
  invoke(callbacks.on_step_end, state);
  invoke(callbacks.on_checkpoint, state, std::string("ckpt"));
  invoke(callbacks.on_train_end, state);
  EXPECT_EQ(calls, (std::vector<std::string>{"a3", "b3", "ckpt1"}));
}
