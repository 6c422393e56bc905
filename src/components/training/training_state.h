#pragma once
// What a training loop tells the outside world at its events: a snapshot of where training is, and lists of
// callbacks (NeMo Automodel's event hooks) that the recipe invokes at train start, step end, validation end,
// checkpoint and train end.
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

namespace automodel::training {

struct TrainingState {
  int64_t step = 0;  // NeMo's 0-based step (the one just run inside step-end hooks)
  int64_t epoch = 0;
  int64_t max_steps = 0;
  double loss = std::nan("");             // last training loss
  std::map<std::string, double> metrics;  // e.g. grad_norm, lr, tps, val_loss
};

using StateCallback = std::function<void(const TrainingState&)>;
// Called after a checkpoint is published, with its directory.
using CheckpointCallback = std::function<void(const TrainingState&, const std::string& checkpoint_path)>;

struct Callbacks {
  std::vector<StateCallback> on_train_start, on_step_end, on_validation_end, on_train_end;
  std::vector<CheckpointCallback> on_checkpoint;
};

// Calls every callback in order; an exception from one propagates (a hook that fails stops training loudly).
template <class... Args>
void invoke(const std::vector<std::function<void(Args...)>>& callbacks, const std::remove_reference_t<Args>&... args) {
  for (const auto& callback : callbacks)
    if (callback) callback(args...);
}

}  // namespace automodel::training
