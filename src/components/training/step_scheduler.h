#pragma once
// StepScheduler: NeMo Automodel's step arithmetic (gradient accumulation, epochs, when to validate, checkpoint and
// stop) without owning the dataloader: the recipe says how many micro-batches an epoch has and drives the steps.
#include <csignal>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "components/training/signal.h"

namespace automodel::training {

// Unset values follow NeMo's StepScheduler constructor (not its YAML dataclass, whose own defaults are
// num_epochs = 10 and ckpt_every_steps = 100: the config layer applies those before building these options).
struct StepSchedulerOptions {
  int64_t global_batch_size = 32;  // samples per optimizer step over all data-parallel ranks
  int64_t local_batch_size = 1;    // samples per micro-batch on one rank
  int64_t dp_size = 1;
  std::optional<int64_t> ckpt_every_steps;  // unset: once per epoch (epoch_len)
  std::optional<int64_t> val_every_steps;   // unset: no periodic validation
  std::optional<int64_t> num_epochs;        // unset: ceil(max_steps / epoch_len), or 10 without max_steps
  std::optional<int64_t> max_steps;         // unset: num_epochs * epoch_len
  bool save_checkpoint_every_epoch = true;  // also checkpoint on the last step of every epoch
  bool validate_on_checkpoint = true;       // checkpoint steps also validate
  int64_t start_step = 0, start_epoch = 0;
  // Signals that request a graceful stop with a checkpoint (NeMo's preemption_signal, default SIGTERM). Empty:
  // no handler is installed.
  std::vector<int> preemption_signals = {SIGTERM};
  // Ctrl-C stops gracefully too: SIGINT joins the signals, the second one exits at once (signal.h).
  bool graceful_interrupt = false;
  // Across the ranks of a job: takes this process's pending stop signal (0: none) and returns the job's (each rank
  // calls it at the same poll, so all stop at the same step). Unset: this process's own.
  std::function<int(int signal)> combine_stop_signal;
  // A step whose loss or gradient norm is not finite: false stops training with an Error (the default); true skips
  // it (no update) and counts it, and more than max_consecutive_skipped_steps in a row is an Error.
  bool skip_nonfinite_steps = false;
  int64_t max_consecutive_skipped_steps = 10;
};

class StepScheduler {
 public:
  // Throws automodel::Error for the values NeMo rejects with ValueError. micro_batches_per_epoch must be >= 1.
  StepScheduler(const StepSchedulerOptions& options, int64_t micro_batches_per_epoch);

  int64_t grad_acc_steps() const { return grad_acc_steps_; }
  int64_t epoch_len() const { return epoch_len_; }  // optimizer steps per epoch: ceil(micro_batches / grad_acc)
  int64_t micro_batches_per_epoch() const { return micro_batches_per_epoch_; }
  int64_t max_steps() const { return max_steps_; }
  int64_t num_epochs() const { return num_epochs_; }
  int64_t ckpt_every_steps() const { return ckpt_every_steps_; }
  std::optional<int64_t> val_every_steps() const { return val_every_steps_; }
  // The 0-based index of the optimizer step being run (NeMo's `step` inside the loop body); after the
  // run, the number of steps taken.
  int64_t step() const { return step_; }
  int64_t epoch() const { return epoch_; }

  // NeMo's `epochs` loop condition: true when another epoch should run (epoch < num_epochs, step < max_steps,
  // no stop signal). Loop: while (s.next_epoch()) { for each step of the epoch { ...; if (!s.advance_step())
  // break; } }.
  bool next_epoch();
  // Steps of the current epoch already taken (a resumed run skips this many * grad_acc micro-batches).
  int64_t steps_into_epoch() const;
  // Micro-batches that make up the current step: grad_acc_steps, fewer for an epoch's trailing partial step.
  int64_t micro_batches_this_step() const;

  bool is_val_step();   // polls the stop signal, as NeMo's property does
  bool is_ckpt_step();  // periodic, last batch of an epoch, last step, or a stop signal
  bool is_last_step() const;
  bool is_last_batch() const;  // the last step of the current epoch
  bool sigterm_received();     // polled at most once per step, so every check within a step agrees
  bool sigterm_flag() const { return sigterm_flag_; }
  // The signal that stopped training (SIGTERM, SIGINT, ...); 0 while none has.
  int stop_signal() const { return stop_signal_; }

  bool skip_nonfinite_steps() const { return skip_nonfinite_steps_; }
  int64_t max_consecutive_skipped_steps() const { return max_consecutive_skipped_steps_; }
  // Counts the current step as skipped or taken. Returns false when that makes more than
  // max_consecutive_skipped_steps skipped steps in a row (the caller stops training).
  bool count_step(bool skipped);
  int64_t skipped_steps() const { return skipped_steps_; }  // over the whole run, resumes included
  int64_t consecutive_skipped_steps() const { return consecutive_skipped_steps_; }

  // After each optimizer step (NeMo's `step += 1` after the yield). Ends the epoch (epoch += 1) when this was its
  // last step, exactly where NeMo's iterator does. Returns whether the current epoch goes on (false: the epoch
  // ended, max_steps was reached or a stop signal arrived).
  bool advance_step();
  // For a dataloader that ran out before epoch_len steps: epoch += 1 (NeMo's iterator end).
  void end_epoch() { ++epoch_; }
  bool finished() const { return step_ >= max_steps_ || sigterm_flag_; }

  // {"step": min(max_steps, step + 1), "epoch": epoch}: saved from inside a step, before advance_step. With
  // skip_nonfinite_steps also "num_skipped_steps" and "consecutive_skipped_steps" (absent: 0 when loaded).
  nlohmann::json state_dict() const;
  void load_state_dict(const nlohmann::json& state);

 private:
  int64_t grad_acc_steps_ = 1, micro_batches_per_epoch_ = 1, epoch_len_ = 1, max_steps_ = 1, num_epochs_ = 1;
  int64_t ckpt_every_steps_ = 1;
  std::optional<int64_t> val_every_steps_;
  bool save_checkpoint_every_epoch_ = true, validate_on_checkpoint_ = true;
  int64_t step_ = 0, epoch_ = 0;
  std::unique_ptr<SignalGuard> signals_;
  bool sigterm_flag_ = false;
  int stop_signal_ = 0;
  std::optional<int64_t> polled_step_;
  std::function<int(int)> combine_stop_signal_;
  bool skip_nonfinite_steps_ = false;
  int64_t max_consecutive_skipped_steps_ = 10;
  int64_t skipped_steps_ = 0, consecutive_skipped_steps_ = 0;
};

}  // namespace automodel::training
