#pragma once
// Optimizers with torch.optim semantics (AdamW, Adam, SGD) over named parameter tensors and over
// nn::FlatParameters buffers, and clip_grad_norm with torch.nn.utils.clip_grad_norm_ semantics.
//
// Precision: optimizer state (exp_avg, exp_avg_sq, momentum_buffer) is fp32 for f32 and bf16
// parameters (f64 for f64 parameters). bf16 parameters are loaded to fp32, updated in fp32 and
// rounded back to bf16 (round to nearest even) on every step. By default no fp32 master copy is
// kept (as torch.optim on bf16 tensors), so updates smaller than half a bf16 ulp of the weight are
// lost; set_fp32_master_weights(true) keeps one per bf16 parameter (mixed precision): the update
// runs on the fp32 master and the bf16 parameter is its rounding.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "nn/flat_params.h"

namespace automodel::optim {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// A parameter group: named tensors (updated from their .grad(); skipped while it is undefined)
// and/or flat buffers (updated in one pass over flat.data from flat.grad; every element of the
// buffer is updated, so a flat buffer must hold only trainable parameters). lr / weight_decay
// left unset take the optimizer's defaults at construction (as torch fills missing group keys).
struct ParamGroup {
  NamedTensors params;
  std::vector<nn::FlatParameters> flat;
  std::optional<double> lr, weight_decay;
  // Read by OptimizerParamScheduler (NeMo Automodel's keys): lr = schedule * lr_mult,
  // weight_decay = schedule * wd_mult; max_lr / min_lr override the scheduler's for this group.
  double lr_mult = 1.0, wd_mult = 1.0;
  std::optional<double> max_lr, min_lr;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient.
  void step();
  // Zeroes the gradients in place (they may be views of a flat gradient buffer).
  void zero_grad();

  std::vector<ParamGroup>& param_groups() { return groups_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }

  // State tensors by "<parameter name>.<key>" (key: exp_avg, exp_avg_sq for Adam/AdamW;
  // momentum_buffer for SGD with momentum), sharing the optimizer's storage, so a checkpoint
  // loader can copy into them. Per-tensor parameters: the parameter's shape; flat buffers: 1-D
  // slices of the buffer's state per slot. State not yet created is created (zeros) here.
  std::map<std::string, Tensor> state_dict();
  // Mixed precision for bf16 parameters (see the top of this file); call before the first step.
  // The masters appear in state_dict() as "<parameter name>.fp32_master".
  void set_fp32_master_weights(bool on);

  // Number of steps taken per parameter name (torch's per-parameter "step").
  std::map<std::string, int64_t> step_counts() const;
  void set_step_counts(const std::map<std::string, int64_t>& steps);

  virtual const char* name() const = 0;

 protected:
  struct Unit {
    std::string name;  // parameter name (per-tensor) or "" for a flat buffer
    Tensor param;      // contiguous
    Tensor flat_grad;  // flat buffers: their gradient buffer
    bool flat = false;
    std::vector<nn::FlatParameters::Slot> slots;  // flat buffers: their parameters
    std::vector<Tensor> state;                    // one per state_keys(), created on first use
    Tensor master;                                // fp32 copy of a bf16 param (set_fp32_master_weights)
    int64_t step = 0;
  };
  Optimizer(std::vector<ParamGroup> groups, double default_lr, double default_weight_decay);
  virtual std::vector<std::string> state_keys() const = 0;
  // Updates `target` (u.param, or its fp32 master) from grad (u.param's dtype, same numel,
  // contiguous); u.step already incremented.
  virtual void update(const ParamGroup& group, Unit& u, Tensor& target, const Tensor& grad) = 0;
  void ensure_state(Unit& u);

 private:
  std::vector<ParamGroup> groups_;
  std::vector<std::vector<Unit>> units_;  // per group
  bool fp32_master_ = false;
};

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // group default
};

// torch.optim.Adam (amsgrad=False, maximize=False): L2 weight decay added to the gradient.
class Adam : public Optimizer {
 public:
  Adam(std::vector<ParamGroup> groups, AdamOptions opt = {});
  Adam(const NamedTensors& params, AdamOptions opt = {});
  const char* name() const override { return "Adam"; }
  const AdamOptions& options() const { return opt_; }

 protected:
  Adam(std::vector<ParamGroup> groups, AdamOptions opt, bool decoupled);
  std::vector<std::string> state_keys() const override { return {"exp_avg", "exp_avg_sq"}; }
  void update(const ParamGroup& group, Unit& u, Tensor& target, const Tensor& grad) override;

 private:
  AdamOptions opt_;
  bool decoupled_;
};

// torch.optim.AdamW (amsgrad=False): decoupled weight decay p -= lr * wd * p, default wd 0.01.
class AdamW : public Adam {
 public:
  static AdamOptions defaults() {
    AdamOptions o;
    o.weight_decay = 1e-2;
    return o;
  }
  AdamW(std::vector<ParamGroup> groups, AdamOptions opt = defaults());
  AdamW(const NamedTensors& params, AdamOptions opt = defaults());
  const char* name() const override { return "AdamW"; }
};

struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0.0, dampening = 0.0;
  double weight_decay = 0.0;  // group default
  bool nesterov = false;
};

// torch.optim.SGD (maximize=False).
class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, SGDOptions opt = {});
  SGD(const NamedTensors& params, SGDOptions opt = {});
  const char* name() const override { return "SGD"; }
  const SGDOptions& options() const { return opt_; }

 protected:
  std::vector<std::string> state_keys() const override;
  void update(const ParamGroup& group, Unit& u, Tensor& target, const Tensor& grad) override;

 private:
  SGDOptions opt_;
};

// torch.nn.utils.clip_grad_norm_: total = norm over all gradients (fp64 accumulation; norm_type
// > 0 or infinity), every gradient multiplied by min(1, max_norm / (total + 1e-6)). Parameters
// without a gradient are skipped. Returns the total norm before clipping.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0);
// The same over gradient tensors themselves (e.g. FlatParameters::grad buffers).
double clip_grads(const std::vector<Tensor>& grads, double max_norm, double norm_type = 2.0);

}  // namespace automodel::optim
