#pragma once
// Optimizers with torch.optim semantics (AdamW, Adam, SGD) over named parameter tensors and over
// nn::FlatParameters buffers, and clip_grad_norm with torch.nn.utils.clip_grad_norm_ semantics.
//
// Precision: optimizer state (exp_avg, exp_avg_sq, momentum_buffer) is fp32 for f32 and bf16
// parameters (f64 for f64 parameters). bf16 parameters are loaded to fp32, updated in fp32 and
// rounded back to bf16 (round to nearest even) on every step. By default no fp32 master copy is
// kept (as torch.optim on bf16 tensors), so updates smaller than half a bf16 ulp of the weight are
// lost; set_fp32_master_weights(true) keeps one per bf16 parameter (mixed precision): the update
// runs on the fp32 master and the bf16 parameter is its rounding. The master is stored split
// (master_split.h): the bf16 parameter itself plus a 16-bit residual, 2 bytes per parameter.
//
// step(StepOptions) is the training step in one pass over memory: gradient norm, clipping, the
// update and zeroing the gradients, tile by tile while the tile is in cache.
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "nn/flat_params.h"

namespace automodel::kernels {
struct Backend;
}

namespace automodel::optim {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// A parameter group: named tensors (updated from their .grad(); skipped while it is undefined)
// and/or flat buffers (updated from flat.grad, slot by slot; a flat buffer must hold only
// trainable parameters). lr / weight_decay left unset take the optimizer's defaults at
// construction (as torch fills missing group keys).
struct ParamGroup {
  NamedTensors params;
  std::vector<nn::FlatParameters> flat;
  std::optional<double> lr, weight_decay;
  // Read by OptimizerParamScheduler (NeMo Automodel's keys): lr = schedule * lr_mult,
  // weight_decay = schedule * wd_mult; max_lr / min_lr override the scheduler's for this group.
  double lr_mult = 1.0, wd_mult = 1.0;
  std::optional<double> max_lr, min_lr;
};

struct StepOptions {
  // torch.nn.utils.clip_grad_norm_(max_norm, norm_type) before the update: every gradient times
  // min(1, max_norm / (total + 1e-6)). Unset or infinity: no clipping.
  std::optional<double> max_norm;
  double norm_type = 2.0;  // > 0 or infinity
  // Zero the gradients in the same pass (zero_grad() after the step).
  bool zero_grad = false;
  // A step whose total norm is not finite (a NaN or infinite gradient) updates nothing: no parameter, state or step
  // count changes, and the gradients are zeroed when zero_grad is set. The update pass must then know the norm before
  // it starts: with clipping its norm pass comes first anyway (free); without, the fused norm becomes a pass of its
  // own over the same blocks (the same norm bit for bit, one more read of the gradients).
  bool skip_if_nonfinite = false;
  // Parameters sharded across processes: given this process's norm (norm_type) of its shards, the norm over every
  // shard (e.g. sqrt of the all-reduced squares), used for clipping, skipping and the return value.
  std::function<double(double local_norm)> global_norm;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient, with clipping and zeroing as `options`
  // say. Returns the total norm (norm_type) of those gradients before clipping. Without clipping
  // the 2-norm is summed inside the update pass (fp64, per fixed block of elements, so the same
  // for every thread count, but not in clip_grads' order: it may differ from it in the last bits);
  // with clipping a norm pass as clip_grads' comes first, so the clipped update is clip_grads'
  // then step() bit for bit (clip_grads given each run of adjacent flat buffers, see Work, as one
  // gradient tensor). With skip_if_nonfinite a non-finite return means nothing was updated.
  double step(const StepOptions& options);
  // step(StepOptions{}) without the norm: torch's optimizer.step().
  void step() { step(StepOptions{}); }
  // Zeroes the gradients in place (they may be views of a flat gradient buffer).
  void zero_grad();

  std::vector<ParamGroup>& param_groups() { return groups_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }

  // State tensors by "<parameter name>.<key>" (key: exp_avg, exp_avg_sq for Adam/AdamW;
  // momentum_buffer for SGD with momentum; see AdamW8bit for its keys). Per-tensor parameters:
  // the parameter's shape; flat buffers: 1-D slices per slot. They share the optimizer's storage,
  // except "<parameter name>.fp32_master" (set_fp32_master_weights), which is the master
  // reconstructed into a fresh fp32 tensor. State not yet created is created (zeros) here.
  std::map<std::string, Tensor> state_dict();
  // Restores a state_dict(): every key, with its shape and dtype, and no other (Error naming the
  // tensor otherwise, before anything changes). Masters are split into parameter + residual (so
  // the bf16 parameters become their rounding), the rest copied in. A loader may also copy into
  // the tensors of state_dict() and pass them back here.
  void load_state_dict(const std::map<std::string, Tensor>& state);
  // Mixed precision for bf16 parameters (see the top of this file); call before the first step.
  void set_fp32_master_weights(bool on);
  // bf16 parameters without a master: updated in fp32 and stochastically rounded back
  // (master_split.h; torchao's bf16_stochastic_round). Exclusive with fp32 masters.
  void set_bf16_stochastic_round(bool on);

  // Number of steps taken per parameter name (torch's per-parameter "step").
  std::map<std::string, int64_t> step_counts() const;
  void set_step_counts(const std::map<std::string, int64_t>& steps);

  virtual const char* name() const = 0;

 protected:
  // A parameter inside a unit: a flat buffer's slot, or the whole tensor.
  struct Segment {
    std::string name;  // "" for a flat buffer without slots
    int64_t begin = 0, numel = 0;
    int64_t whole = 0;  // the parameter's elements (numel, or more when the segment is a stretch of it: a shard)
  };
  // A master reconstruct() cannot restore (master_split.h), by element index in its unit.
  struct MasterException {
    int64_t index;
    float value;
  };
  struct Unit {
    std::string name;  // parameter name (per-tensor) or "" for a flat buffer
    Tensor param;      // contiguous
    Tensor flat_grad;  // flat buffers: their gradient buffer
    bool flat = false;
    std::vector<Segment> segments;  // ascending, disjoint
    std::vector<Tensor> state;      // created on first use (init_state)
    bool state_ready = false;
    // Split fp32 master of a bf16 parameter (set_fp32_master_weights): 16-bit residuals, held in a
    // bf16-typed tensor for its 2-byte storage (they are not bf16 values); sorted exceptions.
    Tensor residual;
    std::vector<MasterException> exceptions;
    int64_t step = 0;
    bool has_master() const { return residual.defined(); }
  };
  // n elements of a unit from element `begin` (inside segments[seg]): target is the parameter's
  // (typed as prepare() was told) or the fp32 master's, grad the gradient's, both at `begin`.
  // round_key, round_at: the key and the index of the first element (in the unit's run, see Work)
  // for master::stochastic_round_n in an update that rounds bf16 itself.
  struct Tile {
    void* target;
    const void* grad;
    int64_t begin, n;
    size_t seg;
    uint32_t round_key;
    int64_t round_at;
  };
  using TileUpdate = std::function<void(const Tile&)>;

  Optimizer(std::vector<ParamGroup> groups, double default_lr, double default_weight_decay);
  // Called serially once per unit and step, u.step already incremented: the update of one tile of
  // u, for a target of dtype `target` (the parameter's, or f32 for a master) and a gradient of
  // dtype `grad`. The returned function runs on many threads at once, on disjoint tiles.
  virtual TileUpdate prepare(const ParamGroup& group, Unit& u, DType target, DType grad) = 0;
  virtual std::vector<std::string> state_keys() const = 0;
  // Creates u.state. Default: per state_keys(), zeros of the parameter's shape (f32, f64 for f64).
  virtual void init_state(Unit& u);
  // The state tensors of u by name, sharing storage. Default: state_keys() per named segment.
  virtual void state_views(Unit& u, std::map<std::string, Tensor>& out);
  // Tiles (and the blocks threads take) start at multiples of this from a segment's start.
  virtual int64_t tile_multiple() const { return 1; }
  // true: under stochastic rounding, bf16 parameters reach prepare() as bf16 targets, and the update
  // rounds its fp32 result as master::stochastic_round_n(result, target, n, round_key, round_at) would
  // (sparing the fp32 copy of the tile). false: the update gets an fp32 copy that step() rounds.
  virtual bool rounds_bf16() const { return false; }
  bool stochastic_round() const { return stochastic_round_; }
  void ensure_state(Unit& u);

 private:
  // A unit with a gradient this step. Flat buffers of one group that lie end to end in the same data and gradient
  // storages (nn::flatten_parameter_lists) form one run: the norm and the random bits of stochastic rounding are
  // those of the one buffer the run would be, so cutting a model into per-layer buffers changes no result.
  struct Work {
    size_t group;
    Unit* u;
    Tensor grad;
    const kernels::Backend* backend;  // the kernels of the parameter's device
    size_t run = 0;                   // index of its run among this step's runs
    int64_t run_offset = 0;           // elements of its run before it
    TileUpdate update;
  };
  // A fixed stretch of elements inside one segment: what a thread takes at a time and what one partial sum of the
  // fused norm covers. Fixed, so that the partial sums (and with them the norm) do not depend on the thread count.
  struct Block {
    size_t work, seg;
    int64_t begin, end;
  };
  struct Blocks {
    std::vector<Block> blocks;
    int64_t tile = 0;   // elements a tile holds (the last of a block may hold fewer)
    int64_t grain = 1;  // blocks per parallel task
  };

  // Stochastic rounding of u's fp32 update by step() (bf16 parameter, rounds_bf16() false).
  bool rounds_after_update(const Unit& u) const {
    return stochastic_round_ && u.param.dtype() == DType::bf16 && !rounds_bf16();
  }
  // The steps of step(StepOptions), in order.
  std::vector<Work> collect_work();
  double separate_norm(const std::vector<Work>& work, double norm_type) const;
  Blocks plan_blocks(const std::vector<Work>& work) const;
  void fused_norm_pass(const std::vector<Work>& work, const Blocks& plan, std::vector<double>& sum_sq) const;
  void prepare_updates(std::vector<Work>& work);
  // Gradient prologue (fused norm into *sum_sq when not null, clipping by coef when scale), update, rounding or
  // master split (new exceptions into `exceptions`) and zeroing of one block. x, failures: per-thread scratch.
  void update_block(const Work& w, const Block& b, int64_t tile, double* sum_sq, bool scale, double coef,
                    bool zero_grad, std::vector<MasterException>& exceptions, std::vector<float>& x,
                    std::vector<int64_t>& failures) const;
  std::vector<ParamGroup> groups_;
  std::vector<std::vector<Unit>> units_;  // per group
  bool fp32_master_ = false;
  bool stochastic_round_ = false;
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
  TileUpdate prepare(const ParamGroup& group, Unit& u, DType target, DType grad) override;

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
  TileUpdate prepare(const ParamGroup& group, Unit& u, DType target, DType grad) override;

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
