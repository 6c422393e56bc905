#pragma once
// Learning-rate and weight-decay schedule with the keys and formulas of NeMo Automodel's
// OptimizerParamScheduler (nemo_automodel/components/optim/scheduler.py, from Megatron-LM), and
// the defaults its LLM recipe fills in (build_lr_scheduler).
//
// lr(step), step = number of optimizer steps taken so far (0 before the first):
//   warmup (lr_warmup_steps > 0 and step <= lr_warmup_steps): init_lr + (max_lr - init_lr) * step / warmup
//   constant: max_lr;  step > lr_decay_steps: min_lr
//   inverse-square-root: max(min_lr, max_lr * sqrt(max(warmup,1)) / sqrt(max(step,1)))
//   otherwise r = (step - warmup) / (lr_decay_steps - warmup), lr = min_lr + coeff * (max_lr - min_lr):
//     linear: 1 - r;  cosine: 0.5 * (cos(pi r) + 1)
//     WSD: 1 while step <= lr_decay_steps - wsd_decay_steps, then with w = (step - that) / wsd_decay_steps
//          lr_wsd_decay_style linear: 1 - w; cosine: 0.5 (cos(pi w) + 1); exponential: 2 * 0.5^w - 1;
//          minus_sqrt: 1 - sqrt(w)
// weight_decay(step): end_wd when step > wd_incr_steps; constant: end_wd (start_wd must equal it);
//   else r = step / wd_incr_steps, start_wd + coeff * (end_wd - start_wd), linear: r,
//   cosine: 0.5 * (cos(pi (1 - r)) + 1).
#include <cstdint>
#include <optional>
#include <string>

namespace automodel::optim {

class Optimizer;

struct LRSchedulerConfig {
  double init_lr = 0.0, max_lr = 0.0, min_lr = 0.0;
  int64_t lr_warmup_steps = 0;
  int64_t lr_decay_steps = 1;
  std::string lr_decay_style = "cosine";  // constant | linear | cosine | inverse-square-root | WSD
  double start_wd = 0.0, end_wd = 0.0;
  int64_t wd_incr_steps = 1;
  std::string wd_incr_style = "constant";     // constant | linear | cosine
  std::optional<int64_t> wsd_decay_steps;     // required for WSD
  std::string lr_wsd_decay_style = "linear";  // linear | cosine | exponential | minus_sqrt
};

// NeMo Automodel's recipe defaults (build_lr_scheduler) from the optimizer's first group and the
// run's total optimizer steps (num_epochs * steps_per_epoch, capped by max_steps):
// init_lr = 0.1 * lr, max_lr = lr, min_lr = 0.01 * lr, lr_warmup_steps = min(1000, total / 10),
// lr_decay_steps = total, lr_decay_style = cosine, start_wd = end_wd = weight_decay,
// wd_incr_steps = total, wd_incr_style = constant. The user's lr_scheduler keys override these.
LRSchedulerConfig default_scheduler_config(double base_lr, double base_weight_decay, int64_t total_steps);

class OptimizerParamScheduler {
 public:
  // Checks the config (as NeMo Automodel asserts: 0 <= min_lr <= max_lr, init_lr <= max_lr,
  // lr_decay_steps > 0, lr_warmup_steps < lr_decay_steps, wsd_decay_steps for WSD,
  // 0 <= start_wd <= end_wd, known styles) and, when given an optimizer, sets its groups'
  // lr / weight_decay for step 0 (as the Python constructor's step(0)).
  explicit OptimizerParamScheduler(LRSchedulerConfig config, Optimizer* optimizer = nullptr);

  // The schedule at `step` (max_lr / min_lr optionally overridden, as a param group's keys do).
  double get_lr(int64_t step, std::optional<double> max_lr = std::nullopt,
                std::optional<double> min_lr = std::nullopt) const;
  double get_wd(int64_t step) const;

  // Advances num_steps by `increment` and sets every group's lr = get_lr * lr_mult and
  // weight_decay = get_wd * wd_mult.
  void step(int64_t increment = 1);
  int64_t num_steps() const { return num_steps_; }
  void set_num_steps(int64_t n);  // for resuming; applies the schedule
  const LRSchedulerConfig& config() const { return cfg_; }

 private:
  void apply();
  LRSchedulerConfig cfg_;
  Optimizer* optimizer_;
  int64_t num_steps_ = 0;
};

}  // namespace automodel::optim
