#include "components/training/step_scheduler.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace automodel::training {

namespace {

void require_positive(const std::string& key, int64_t value, const std::string& hint) {
  if (value <= 0)
    throw Error(key + " must be greater than 0, got " + std::to_string(value), "step_scheduler." + key, hint);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

StepScheduler::StepScheduler(const StepSchedulerOptions& o, int64_t micro_batches_per_epoch) {
  require_positive("global_batch_size", o.global_batch_size, "set step_scheduler.global_batch_size to e.g. 32");
  require_positive("local_batch_size", o.local_batch_size, "set step_scheduler.local_batch_size to e.g. 1");
  require_positive("dp_size", o.dp_size, "the data-parallel size is the number of processes; it cannot be 0");
  const int64_t per_micro_step = o.local_batch_size * o.dp_size;
  if (o.global_batch_size % per_micro_step != 0)
    throw Error("global_batch_size (" + std::to_string(o.global_batch_size) +
                    ") must be divisible by local_batch_size * dp_size (" + std::to_string(o.local_batch_size) + " * " +
                    std::to_string(o.dp_size) + ")",
                "step_scheduler.global_batch_size",
                "choose global_batch_size as a multiple of " + std::to_string(per_micro_step) +
                    "; gradient accumulation steps = global_batch_size / (local_batch_size * dp_size)");
  grad_acc_steps_ = o.global_batch_size / per_micro_step;
  if (o.start_step < 0 || o.start_epoch < 0)
    throw Error("start_step and start_epoch must be >= 0, got " + std::to_string(o.start_step) + " and " +
                    std::to_string(o.start_epoch),
                "step_scheduler.start_step", "leave them at 0 unless resuming by hand");
  step_ = o.start_step;
  epoch_ = o.start_epoch;
  if (micro_batches_per_epoch <= 0)
    throw Error("the training dataloader yields no batches (" + std::to_string(micro_batches_per_epoch) +
                    " micro-batches per epoch)",
                "step_scheduler",
                "check the dataset path/split and that local_batch_size is not larger than the "
                "dataset when drop_last is set");
  micro_batches_per_epoch_ = micro_batches_per_epoch;
  epoch_len_ = ceil_div(micro_batches_per_epoch, grad_acc_steps_);

  // A given max_steps is checked before num_epochs is derived from it, so that the error names the value given.
  if (o.max_steps)
    require_positive("max_steps", *o.max_steps, "set max_steps >= 1, or leave it unset to run num_epochs epochs");
  if (o.num_epochs)
    require_positive("num_epochs", *o.num_epochs, "set num_epochs >= 1, or leave it unset and give max_steps");
  num_epochs_ = o.num_epochs ? *o.num_epochs : (o.max_steps ? ceil_div(*o.max_steps, epoch_len_) : 10);
  if (o.val_every_steps) require_positive("val_every_steps", *o.val_every_steps, "leave it unset to disable");
  val_every_steps_ = o.val_every_steps;
  max_steps_ = o.max_steps ? *o.max_steps : num_epochs_ * epoch_len_;
  ckpt_every_steps_ = o.ckpt_every_steps ? *o.ckpt_every_steps : epoch_len_;
  require_positive("ckpt_every_steps", ckpt_every_steps_, "leave it unset to checkpoint once per epoch");
  save_checkpoint_every_epoch_ = o.save_checkpoint_every_epoch;
  validate_on_checkpoint_ = o.validate_on_checkpoint;
  require_positive("max_consecutive_skipped_steps", o.max_consecutive_skipped_steps,
                   "allow at least one skipped step in a row, e.g. 10");
  skip_nonfinite_steps_ = o.skip_nonfinite_steps;
  max_consecutive_skipped_steps_ = o.max_consecutive_skipped_steps;
  std::vector<int> signals = o.preemption_signals;
  if (o.graceful_interrupt && std::find(signals.begin(), signals.end(), SIGINT) == signals.end())
    signals.push_back(SIGINT);
  if (!signals.empty()) signals_ = std::make_unique<SignalGuard>(signals);
  combine_stop_signal_ = o.combine_stop_signal;
}

bool StepScheduler::next_epoch() {
  // A run resumed from a checkpoint taken on an epoch's last step has nothing left of that epoch (NeMo's resumed
  // dataloader yields nothing there and its iterator moves on to the next epoch).
  while (step_ < max_steps_ && epoch_ < num_epochs_ && step_ - epoch_ * epoch_len_ >= epoch_len_) ++epoch_;
  if (epoch_ >= num_epochs_) return false;
  return !(step_ >= max_steps_ || sigterm_received());
}

int64_t StepScheduler::steps_into_epoch() const {
  return std::clamp<int64_t>(step_ - epoch_ * epoch_len_, 0, epoch_len_);
}

int64_t StepScheduler::micro_batches_this_step() const {
  const int64_t tail = micro_batches_per_epoch_ % grad_acc_steps_;
  return (tail != 0 && is_last_batch()) ? tail : grad_acc_steps_;
}

bool StepScheduler::sigterm_received() {
  if (sigterm_flag_) return true;
  if (!signals_) return false;
  if (polled_step_ == step_) return false;
  polled_step_ = step_;
  stop_signal_ = signals_->received_signal();
  if (combine_stop_signal_) stop_signal_ = combine_stop_signal_(stop_signal_);
  sigterm_flag_ = stop_signal_ != 0;
  return sigterm_flag_;
}

bool StepScheduler::count_step(bool skipped) {
  if (!skipped) {
    consecutive_skipped_steps_ = 0;
    return true;
  }
  ++skipped_steps_;
  return ++consecutive_skipped_steps_ <= max_consecutive_skipped_steps_;
}

bool StepScheduler::is_last_batch() const { return step_ % epoch_len_ == epoch_len_ - 1; }

bool StepScheduler::is_last_step() const {
  if (step_ + 1 >= max_steps_) return true;
  // Epochs can run out before max_steps (a small dataset): then the last batch of the last epoch is the end.
  if (epoch_ + 1 >= num_epochs_) return is_last_batch();
  return false;
}

bool StepScheduler::is_ckpt_step() {
  const bool periodic = step_ % ckpt_every_steps_ == ckpt_every_steps_ - 1;
  const bool epoch_boundary = save_checkpoint_every_epoch_ && is_last_batch();
  return periodic || epoch_boundary || is_last_step() || sigterm_received();
}

bool StepScheduler::is_val_step() {
  bool periodic = val_every_steps_ && step_ % *val_every_steps_ == *val_every_steps_ - 1;
  bool on_checkpoint = validate_on_checkpoint_ && is_ckpt_step();
  return (periodic || on_checkpoint) && !sigterm_flag_;
}

bool StepScheduler::advance_step() {
  const bool last_of_epoch = is_last_batch();
  const bool partial_tail = last_of_epoch && micro_batches_per_epoch_ % grad_acc_steps_ != 0;
  ++step_;
  // NeMo yields an epoch's trailing partial group after its loop, so that step always ends the epoch; a full
  // group stops the run (without ending the epoch) once max_steps is reached or a signal arrived.
  if (partial_tail) {
    ++epoch_;
    return false;
  }
  if (step_ >= max_steps_ || sigterm_flag_) return false;
  if (last_of_epoch) {
    ++epoch_;
    return false;
  }
  return true;
}

nlohmann::json StepScheduler::state_dict() const {
  nlohmann::json state = {{"step", std::min(max_steps_, step_ + 1)}, {"epoch", epoch_}};
  if (skip_nonfinite_steps_) {
    state["num_skipped_steps"] = skipped_steps_;
    state["consecutive_skipped_steps"] = consecutive_skipped_steps_;
  }
  return state;
}

void StepScheduler::load_state_dict(const nlohmann::json& state) {
  for (const char* key : {"step", "epoch"})
    if (!state.is_object() || !state.contains(key) || !state[key].is_number_integer() || state[key].get<int64_t>() < 0)
      throw Error(std::string("step scheduler state needs a non-negative integer '") + key + "'",
                  "step_scheduler state: " + state.dump(), "the checkpoint's step scheduler state is damaged");
  for (const char* key : {"num_skipped_steps", "consecutive_skipped_steps"})
    if (state.contains(key) && (!state[key].is_number_integer() || state[key].get<int64_t>() < 0))
      throw Error(std::string("step scheduler state: '") + key + "' must be a non-negative integer",
                  "step_scheduler state: " + state.dump(), "the checkpoint's step scheduler state is damaged");
  step_ = state["step"].get<int64_t>();
  epoch_ = state["epoch"].get<int64_t>();
  skipped_steps_ = state.value("num_skipped_steps", int64_t(0));
  consecutive_skipped_steps_ = state.value("consecutive_skipped_steps", int64_t(0));
  polled_step_.reset();
}

}  // namespace automodel::training
