#include "components/optim/scheduler.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "components/optim/optimizer.h"
#include "core/error.h"

namespace automodel::optim {

LRSchedulerConfig default_scheduler_config(double base_lr, double base_weight_decay, int64_t total_steps) {
  LRSchedulerConfig c;
  c.init_lr = base_lr * 0.1;
  c.max_lr = base_lr;
  c.min_lr = base_lr * 0.01;
  c.lr_warmup_steps = std::min<int64_t>(1000, total_steps / 10);
  c.lr_decay_steps = total_steps;
  c.lr_decay_style = "cosine";
  c.start_wd = c.end_wd = base_weight_decay;
  c.wd_incr_steps = total_steps;
  c.wd_incr_style = "constant";
  return c;
}

OptimizerParamScheduler::OptimizerParamScheduler(LRSchedulerConfig config, Optimizer* optimizer)
    : cfg_(std::move(config)), optimizer_(optimizer) {
  const auto& c = cfg_;
  AM_CHECK(c.min_lr >= 0.0, "lr_scheduler: min_lr must be >= 0, got ", c.min_lr);
  AM_CHECK(c.max_lr >= c.min_lr, "lr_scheduler: max_lr (", c.max_lr, ") must be >= min_lr (", c.min_lr, ")");
  AM_CHECK(c.init_lr <= c.max_lr, "lr_scheduler: init_lr (", c.init_lr, ") must be <= max_lr (", c.max_lr, ")");
  AM_CHECK(c.lr_decay_steps > 0, "lr_scheduler: lr_decay_steps must be > 0, got ", c.lr_decay_steps);
  AM_CHECK(c.lr_warmup_steps >= 0 && c.lr_warmup_steps < c.lr_decay_steps, "lr_scheduler: lr_warmup_steps (",
           c.lr_warmup_steps, ") must be in [0, lr_decay_steps = ", c.lr_decay_steps, ")");
  const std::string& s = c.lr_decay_style;
  AM_CHECK(s == "constant" || s == "linear" || s == "cosine" || s == "inverse-square-root" || s == "WSD",
           "lr_scheduler: unknown lr_decay_style '", s, "' (constant, linear, cosine, inverse-square-root, WSD)");
  if (s == "WSD") {
    AM_CHECK(c.wsd_decay_steps.has_value(), "lr_scheduler: lr_decay_style WSD needs wsd_decay_steps");
    AM_CHECK(*c.wsd_decay_steps > 0, "lr_scheduler: wsd_decay_steps must be > 0, got ", *c.wsd_decay_steps);
    const std::string& w = c.lr_wsd_decay_style;
    AM_CHECK(w == "linear" || w == "cosine" || w == "exponential" || w == "minus_sqrt",
             "lr_scheduler: unknown lr_wsd_decay_style '", w, "' (linear, cosine, exponential, minus_sqrt)");
  }
  AM_CHECK(c.start_wd >= 0.0, "lr_scheduler: start_wd must be >= 0, got ", c.start_wd);
  AM_CHECK(c.end_wd >= c.start_wd, "lr_scheduler: end_wd (", c.end_wd, ") must be >= start_wd (", c.start_wd, ")");
  const std::string& ws = c.wd_incr_style;
  AM_CHECK(ws == "constant" || ws == "linear" || ws == "cosine", "lr_scheduler: unknown wd_incr_style '", ws,
           "' (constant, linear, cosine)");
  if (ws == "constant")
    AM_CHECK(c.start_wd == c.end_wd, "lr_scheduler: wd_incr_style constant needs start_wd == end_wd");
  else
    AM_CHECK(c.wd_incr_steps > 0, "lr_scheduler: wd_incr_steps must be > 0, got ", c.wd_incr_steps);
  step(0);
}

double OptimizerParamScheduler::get_lr(int64_t step, std::optional<double> max_lr_o,
                                       std::optional<double> min_lr_o) const {
  const double max_lr = max_lr_o.value_or(cfg_.max_lr);
  const double min_lr = min_lr_o.value_or(cfg_.min_lr);
  const int64_t warmup = cfg_.lr_warmup_steps;
  if (warmup > 0 && step <= warmup) return cfg_.init_lr + (max_lr - cfg_.init_lr) * double(step) / double(warmup);
  const std::string& style = cfg_.lr_decay_style;
  if (style == "constant") return max_lr;
  if (step > cfg_.lr_decay_steps) return min_lr;
  if (style == "inverse-square-root") {
    const double w = double(std::max<int64_t>(warmup, 1));
    const double n = double(std::max<int64_t>(step, 1));
    return std::max(min_lr, max_lr * std::sqrt(w) / std::sqrt(n));
  }
  const double ratio = double(step - warmup) / double(cfg_.lr_decay_steps - warmup);
  const double delta = max_lr - min_lr;
  double coeff = 0.0;
  if (style == "linear") {
    coeff = 1.0 - ratio;
  } else if (style == "cosine") {
    coeff = 0.5 * (std::cos(std::numbers::pi * ratio) + 1.0);
  } else {  // WSD
    const int64_t anneal_start = cfg_.lr_decay_steps - *cfg_.wsd_decay_steps;
    if (step <= anneal_start) {
      coeff = 1.0;
    } else {
      const double w = double(step - anneal_start) / double(*cfg_.wsd_decay_steps);
      const std::string& ws = cfg_.lr_wsd_decay_style;
      if (ws == "linear")
        coeff = 1.0 - w;
      else if (ws == "cosine")
        coeff = 0.5 * (std::cos(std::numbers::pi * w) + 1.0);
      else if (ws == "exponential")
        coeff = 2.0 * std::pow(0.5, w) - 1.0;
      else  // minus_sqrt
        coeff = 1.0 - std::sqrt(w);
    }
  }
  return min_lr + coeff * delta;
}

double OptimizerParamScheduler::get_wd(int64_t step) const {
  if (step > cfg_.wd_incr_steps) return cfg_.end_wd;
  if (cfg_.wd_incr_style == "constant") return cfg_.end_wd;
  const double ratio = double(step) / double(cfg_.wd_incr_steps);
  const double coeff =
      cfg_.wd_incr_style == "linear" ? ratio : 0.5 * (std::cos(std::numbers::pi * (1.0 - ratio)) + 1.0);
  return cfg_.start_wd + coeff * (cfg_.end_wd - cfg_.start_wd);
}

void OptimizerParamScheduler::step(int64_t increment) {
  AM_CHECK(num_steps_ + increment >= 0, "lr_scheduler: step count would become negative");
  num_steps_ += increment;
  apply();
}

void OptimizerParamScheduler::set_num_steps(int64_t n) {
  AM_CHECK(n >= 0, "lr_scheduler: negative step count ", n);
  num_steps_ = n;
  apply();
}

void OptimizerParamScheduler::apply() {
  if (!optimizer_) return;
  const double wd = get_wd(num_steps_);
  for (ParamGroup& g : optimizer_->param_groups()) {
    g.lr = get_lr(num_steps_, g.max_lr, g.min_lr) * g.lr_mult;
    g.weight_decay = wd * g.wd_mult;
  }
}

}  // namespace automodel::optim
