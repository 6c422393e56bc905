#include "recipes/llm_finetune.h"

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <limits>

#include "autograd/engine.h"
#include "components/checkpoint/checkpoint_dir.h"
#include "components/checkpoint/model_io.h"
#include "components/checkpoint/sharded_state_io.h"
#include "components/checkpoint/state_io.h"
#include "components/config/targets.h"
#include "components/data/llm_datasets.h"
#include "components/data/loader.h"
#include "components/data/packing.h"
#include "components/distributed/communicator.h"
#include "components/distributed/gradient_reducer.h"
#include "components/distributed/sharded_parameters.h"
#include "components/peft/adapter_io.h"
#include "components/peft/lora.h"
#include "components/training/metrics.h"
#include "components/training/nonfinite.h"
#include "components/training/progress.h"
#include "components/training/step_scheduler.h"
#include "core/allocator.h"
#include "core/error.h"
#include "core/grad_node.h"
#include "core/rng.h"
#include "models/vision_language_model.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "recipes/build.h"
#include "recipes/build_vlm_data.h"
#include "recipes/recipe_sections.h"
#include "recipes/vlm_collate.h"

namespace automodel::recipes {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kFinetuneRecipe = "automodel.recipes.llm.TrainFinetuneRecipeForNextTokenPrediction";
// NeMo's VLM recipe: the same loop, with an image-text model and VLM data (which the model section decides).
constexpr const char* kVlmFinetuneRecipe = "automodel.recipes.vlm.FinetuneRecipeForVLM";

struct CheckpointOptions {
  bool enabled = true;
  std::string dir = "checkpoints/";
  std::optional<std::string> restore_from;
  std::optional<int64_t> max_recent;
};

CheckpointOptions checkpoint_options(const ConfigNode* s) {
  CheckpointOptions o;
  if (s == nullptr || s->is_null()) return o;
  check_section_keys(*s, "checkpoint");
  o.enabled = s->get<bool>("enabled", true);
  o.dir = s->get<std::string>("checkpoint_dir", o.dir);
  if (s->get<std::string>("model_save_format", "safetensors") != "safetensors")
    throw Error("checkpoint.model_save_format must be safetensors", s->at("model_save_format").where(),
                "automodel writes Hugging Face safetensors (torch_save is a PyTorch format)");
  o.restore_from = s->get_optional<std::string>("restore_from");
  o.max_recent = s->get_optional<int64_t>("max_recent_checkpoints");
  if (o.max_recent && *o.max_recent < 1)
    throw Error("checkpoint.max_recent_checkpoints must be >= 1", s->at("max_recent_checkpoints").where(), "or null");
  return o;
}

uint64_t seed_of(const ConfigNode& cfg) {
  if (const ConfigNode* rng = cfg.find("rng"); rng && !rng->is_null()) {
    check_section_keys(*rng, "rng");
    return static_cast<uint64_t>(rng->get<int64_t>("seed", 42));
  }
  return static_cast<uint64_t>(cfg.get<int64_t>("seed", 42));
}

// A positive integer at `key` of section s (nullopt when absent or null), the error at its line.
std::optional<int64_t> positive_int(const ConfigNode& s, const std::string& key, const std::string& hint) {
  const std::optional<int64_t> v = s.get_optional<int64_t>(key);
  if (v && *v < 1)
    throw Error(s.path() + "." + key + " must be >= 1, got " + std::to_string(*v), s.at(key).where(), hint);
  return v;
}

// NeMo's preemption_signal: a signal name or number, a list of them, or null (none).
std::vector<int> preemption_signals(const ConfigNode& s) {
  const ConfigNode* n = s.find("preemption_signal");
  if (n == nullptr) return {SIGTERM};
  std::vector<int> out;
  auto add = [&](const ConfigNode& v) {
    const std::string spec = v.kind() == ConfigNode::Kind::Int ? std::to_string(v.as_int()) : v.as_string();
    try {
      const int sig = training::resolve_signal(spec);
      if (std::find(out.begin(), out.end(), sig) == out.end()) out.push_back(sig);
    } catch (const Error& e) {
      throw Error(e.what_part(), v.where(), e.hint());
    }
  };
  if (n->is_list())
    for (size_t i = 0; i < n->size(); ++i) add((*n)[i]);
  else if (!n->is_null())
    add(*n);
  return out;
}

// The section's values are checked here, at their lines, before anything is built from them (the dataloader takes
// local_batch_size before the step scheduler would see it).
training::StepSchedulerOptions step_scheduler_options(const ConfigNode& s) {
  check_section_keys(s, "step_scheduler");
  training::StepSchedulerOptions o;
  o.global_batch_size =
      positive_int(s, "global_batch_size", "set it to the samples per optimizer step, e.g. 32").value_or(32);
  o.local_batch_size = positive_int(s, "local_batch_size", "set it to the samples per micro-batch, e.g. 1").value_or(1);
  o.ckpt_every_steps = positive_int(s, "ckpt_every_steps", "leave it unset to checkpoint once per epoch");
  o.val_every_steps = positive_int(s, "val_every_steps", "leave it unset to validate only with checkpoints");
  o.num_epochs = positive_int(s, "num_epochs", "leave it unset and give max_steps");
  o.max_steps = positive_int(s, "max_steps", "leave it unset to run num_epochs epochs");
  o.save_checkpoint_every_epoch = s.get<bool>("save_checkpoint_every_epoch", true);
  o.validate_on_checkpoint = s.get<bool>("validate_on_checkpoint", o.validate_on_checkpoint);
  o.preemption_signals = preemption_signals(s);
  o.graceful_interrupt = true;
  o.skip_nonfinite_steps = s.get<bool>("skip_nonfinite_steps", false);
  o.max_consecutive_skipped_steps =
      positive_int(s, "max_consecutive_skipped_steps", "set how many skipped steps in a row end training, e.g. 10")
          .value_or(o.max_consecutive_skipped_steps);
  // NeMo's remote logging, loss averaging and garbage collection intervals do nothing here; a nonsense value is
  // still an error rather than silently accepted.
  for (const char* key : {"log_remote_every_steps", "loss_average_window_steps", "gc_every_steps"})
    positive_int(s, key, "an interval in steps, or null");
  return o;
}

// packed_sequence.packed_sequence_size: 0 (or no section) trains unpacked samples.
int64_t packed_sequence_size(const ConfigNode* p) {
  if (p == nullptr || p->is_null()) return 0;
  check_section_keys(*p, "packed_sequence");
  const int64_t size = p->get<int64_t>("packed_sequence_size", 0);
  if (size < 0)
    throw Error("packed_sequence.packed_sequence_size must be >= 0, got " + std::to_string(size),
                p->at("packed_sequence_size").where(), "0 trains unpacked samples; > 0 is the pack length");
  return size;
}

// clip_grad_norm.max_norm: a positive finite number, or unset / null for no clipping. Zero would zero every
// gradient, a negative one flip them, NaN poison them.
std::optional<double> max_grad_norm(const ConfigNode* c) {
  if (c == nullptr || c->is_null()) return std::nullopt;
  check_section_keys(*c, "clip_grad_norm");
  const std::optional<double> v = c->get_optional<double>("max_norm");
  if (v && !(*v > 0 && std::isfinite(*v)))
    throw Error("clip_grad_norm.max_norm must be a positive finite number, got " + training::number_text(*v),
                c->at("max_norm").where(),
                "e.g. 1.0; to train without clipping, remove clip_grad_norm (or set it null)");
  return v;
}

// Tokens of a label row that are not trailing padding (NeMo's count_tail_padding).
int64_t tokens_without_tail_padding(const Tensor& labels) {
  const int64_t* l = labels.data<int64_t>();
  const int64_t rows = labels.shape()[0], cols = labels.shape()[1];
  int64_t n = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t end = cols;
    while (end > 0 && l[r * cols + end - 1] == -100) --end;
    n += end;
  }
  return n;
}

// Test hook: AUTOMODEL_FAULT_INJECTION=kill_during_<point>:<n> SIGKILLs the process the n-th time it reaches
// <point>, so the end-to-end tests can show that an interrupted checkpoint save never becomes the one resumed from.
void fault_injection_point(const std::string& point) {
  static int hits = 0;
  const char* spec = std::getenv("AUTOMODEL_FAULT_INJECTION");
  const std::string prefix = "kill_during_" + point + ":";
  if (spec == nullptr || std::string(spec).rfind(prefix, 0) != 0) return;
  if (++hits == std::atoi(spec + prefix.size())) std::raise(SIGKILL);
}

// Test hook: AUTOMODEL_FAULT_INJECTION=nan_loss_at_step:<s> turns step s's loss into NaN, so the end-to-end tests can
// show a passing non-finite step being skipped (a diverging run only shows the non-finite steps that end it).
bool inject_nan_loss(int64_t step) {
  const char* spec = std::getenv("AUTOMODEL_FAULT_INJECTION");
  const std::string prefix = "nan_loss_at_step:";
  return spec != nullptr && std::string(spec).rfind(prefix, 0) == 0 && std::atoll(spec + prefix.size()) == step;
}

double peak_memory_gib() { return double(CachingAllocator::cpu().stats().peak_bytes) / double(1 << 30); }

class FinetuneRun {
 public:
  FinetuneRun(const ConfigNode& cfg, const training::Callbacks& callbacks) : cfg_(cfg), callbacks_(callbacks) {}

  RunResult run() {
    setup();
    train();
    return result_;
  }

 private:
  // ---- setup: every component from its section -------------------------------------------------------------------
  void setup() {
    // Every section is checked, and every value that needs no data or weights read, before any are loaded: a typo
    // fails in milliseconds rather than after the model is loaded and the dataset tokenized.
    validate_recipe(cfg_);
    seed_ = seed_of(cfg_);
    ckpt_ = checkpoint_options(cfg_.find("checkpoint"));
    dist_ = build_distributed_options(cfg_.find("distributed"), cfg_.find("dist_env"), comm_.size());
    comm_.set_timeout(dist_.timeout_minutes * 60);
    checkpoint_layers_ = dist_.activation_checkpointing;
    if (comm_.size() > 1) check_ranks_agree();
    training::StepSchedulerOptions sched_opts = step_scheduler_options(cfg_.at("step_scheduler"));
    sched_opts.dp_size = dist_.dp_size;
    // A stop signal that reaches one rank stops them all at the same step (each poll is a collective).
    if (comm_.size() > 1)
      sched_opts.combine_stop_signal = [this](int signal) {
        return int(comm_.all_reduce(int64_t(signal), distributed::ReduceOp::max));
      };
    train_loader_opts_ = build_loader_options(cfg_.find("dataloader"), false);
    val_loader_opts_ = build_loader_options(cfg_.find("validation_dataloader"), false);
    const uint64_t loader_seed =
        cfg_.contains("dataloader.seed") ? cfg_.get<int64_t>("dataloader.seed") : static_cast<int64_t>(seed_);
    const int64_t pack_size = packed_sequence_size(cfg_.find("packed_sequence"));
    peft_ = build_peft_config(cfg_.find("peft"));
    max_grad_norm_ = max_grad_norm(cfg_.find("clip_grad_norm"));

    manual_seed(seed_);
    // The run's logs and checkpoints go into checkpoint_dir: one run at a time writes there (its first rank).
    if (main_rank()) {
      dir_lock_ = std::make_unique<checkpoint::CheckpointDirLock>(ckpt_.dir);
      if (const auto& stale = dir_lock_->taken_over())
        std::printf("note: took over the lock of a run that ended without releasing it (%s)\n",
                    stale->describe().c_str());
    }

    model_ = build_model(cfg_.at("model"), model_dir_);
    image_text_ = dynamic_cast<const models::VisionLanguageModel*>(model_.get()) != nullptr;
    apply_freeze_config(cfg_.find("freeze_config"), *model_);
    if (peft_) {
      std::vector<std::string> adapted;
      try {
        adapted = peft::apply_lora(*model_, *peft_, seed_);
      } catch (const Error& e) {  // name the recipe's line rather than the component
        throw Error(e.what_part(), cfg_.at("peft").where(), e.hint());
      }
      if (main_rank())
        std::printf("LoRA r=%lld alpha=%g on %zu linear layers\n", (long long)peft_->dim, peft_->alpha, adapted.size());
    }
    tok_ = build_tokenizer(cfg_.find("tokenizer"), model_dir_);
    loss_ = build_loss(cfg_.find("loss_fn"), model_->kernels().fused);

    if (image_text_) {
      build_image_text_data(pack_size);
    } else {
      if (is_vlm_dataset(cfg_.at("dataset")))
        throw Error("the dataset holds images but the model is a causal LM", cfg_.at("dataset").where(),
                    "load an image-text model: model._target_: NeMoAutoModelForImageTextToText.from_pretrained");
      train_data_ = beyond_max_positions_warned(build_dataset(cfg_.at("dataset"), tok_.text), "dataset");
      // Packing needs every sample's length: the dataset is tokenized whole here.
      if (pack_size > 0)
        train_data_ = data::dataset_of(data::pack_sequences(data::materialize(train_data_), pack_size, tok_.pad_id));
      if (const ConfigNode* v = cfg_.find("validation_dataset"); v && !v->is_null())
        val_data_ = beyond_max_positions_warned(build_dataset(*v, tok_.text), "validation_dataset");
    }

    // The loader yields each micro-step's global batch (local_batch_size x dp); every rank takes its slice of it.
    loader_ = std::make_unique<data::DataLoader>(train_size(), sched_opts.local_batch_size * dist_.dp_size,
                                                 train_loader_opts_.shuffle, loader_seed, train_loader_opts_.drop_last);
    if (loader_->num_batches() == 0)
      throw Error("the training dataset has fewer samples than one batch with drop_last", cfg_.at("dataset").where(),
                  "lower step_scheduler.local_batch_size or set dataloader.drop_last: false");
    sched_ = std::make_unique<training::StepScheduler>(sched_opts, static_cast<int64_t>(loader_->num_batches()));

    const std::vector<nn::NamedParameters> per_layer = trainable_parameters_per_layer(*model_);
    if (per_layer.empty())
      throw Error("no parameter of the model requires a gradient", cfg_.at("optimizer").where(),
                  "enable training of some parameters (full fine-tune or a peft: section)");
    if (dist_.strategy == DistributedStrategy::fsdp2 && comm_.size() > 1) {
      // HSDP: dp_replicate_size groups of consecutive ranks, each sharding the model; rank s of every group holds
      // the same shard (torch's device mesh (dp_replicate, dp_shard)).
      shard_comm_ = &comm_;
      if (dist_.dp_replicate_size > 1) {
        const int shards = comm_.size() / int(dist_.dp_replicate_size);
        shard_group_ = comm_.split(comm_.rank() / shards, comm_.rank() % shards);
        replica_group_ = comm_.split(comm_.rank() % shards, comm_.rank() / shards);
        shard_comm_ = shard_group_.get();
      }
      sharded_ = std::make_unique<distributed::ShardedParameters>(*shard_comm_, per_layer, replica_group_.get(),
                                                                  optimizer_state_block(cfg_.at("optimizer")));
      optimizer_ = build_optimizer(cfg_.at("optimizer"), *model_, sharded_->shards(), /*flat_state=*/true);
    } else {
      flat_buffers_ = nn::flatten_parameter_lists(per_layer);
      optimizer_ = build_optimizer(cfg_.at("optimizer"), *model_, flat_buffers_,
                                   /*flat_state=*/model_->num_parameters(true) == model_->num_parameters());
      if (comm_.size() > 1)
        reducer_ = std::make_unique<distributed::GradientReducer>(comm_, flat_buffers_, dist_.bucket_bytes,
                                                                  dist_.overlap_grad_reduce);
    }
    lr_sched_ = build_lr_scheduler(cfg_.find("lr_scheduler"), *optimizer_, sched_->max_steps());

    if (!ckpt_.enabled && ckpt_.restore_from)
      std::printf("note: checkpoint.restore_from is ignored: checkpointing is disabled (checkpoint.enabled: false)\n");
    restored_ = ckpt_.enabled && restore();
    // Loading, flattening and restoring leave blocks in the cache whose sizes training never asks for again
    // (per-parameter tensors, reader buffers); kept, they would stay resident for the whole run.
    CachingAllocator::cpu().empty_cache();
    if (!main_rank()) return;
    train_log_ = std::make_unique<training::JsonlWriter>((fs::path(ckpt_.dir) / "training.jsonl").string());
    if (val_size() > 0)
      val_log_ = std::make_unique<training::JsonlWriter>((fs::path(ckpt_.dir) / "validation.jsonl").string());
    if (reducer_)
      std::printf("data parallel (ddp): %d ranks, %lld gradient buckets\n", comm_.size(),
                  (long long)reducer_->num_buckets());
    if (sharded_)
      std::printf(
          "data parallel (fsdp2): %d ranks, %zu sharded buffers, %.1f MB of parameter and gradient shards "
          "per rank\n",
          comm_.size(), sharded_->shards().size(), double(sharded_->shard_bytes()) / 1e6);
    std::printf(
        "model %s: %lld parameters (%lld trainable), %zu training samples, %lld micro-batches of %lld per "
        "step, %lld steps\n",
        model_dir_.c_str(), (long long)model_->num_parameters(), (long long)model_->num_parameters(true), train_size(),
        (long long)sched_->grad_acc_steps(), (long long)sched_opts.local_batch_size, (long long)sched_->max_steps());
  }

  // ---- the train loop ----------------------------------------------------------------------------------------------
  void train() {
    training::ProgressOptions po;
    po.total_steps = sched_->max_steps();
    po.initial_step = sched_->step();
    po.is_tty = training::stdout_is_tty();
    std::ostream silent(nullptr);  // the other ranks report nothing
    training::ProgressReporter progress(main_rank() ? std::cout : silent, po);
    bool continue_epoch = restored_;  // a restored loader resumes inside its epoch
    state_.step = sched_->step();
    state_.epoch = sched_->epoch();
    state_.max_steps = sched_->max_steps();
    training::invoke(callbacks_.on_train_start, state_);
    last_time_ = Clock::now();
    while (sched_->next_epoch()) {
      // A run resumed on an epoch's last step finds the scheduler already in the next epoch: the loader starts it.
      if (!continue_epoch || loader_->epoch() != sched_->epoch()) loader_->set_epoch(sched_->epoch());
      continue_epoch = false;
      while (true) {
        std::vector<data::Batch> micro_batches;
        std::vector<size_t> indices;
        while (static_cast<int64_t>(micro_batches.size()) < sched_->micro_batches_this_step() && loader_->next(indices))
          micro_batches.push_back(collate(/*validation=*/false, rank_slice(indices)));
        if (micro_batches.empty()) {  // the loader ended the epoch (a run resumed at an epoch's end)
          sched_->end_epoch();
          break;
        }
        nlohmann::ordered_json metrics = train_step(micro_batches);
        const bool nonfinite = !nonfinite_reason_.empty();
        bool diverged = nonfinite && !sched_->skip_nonfinite_steps();
        if (sched_->skip_nonfinite_steps()) {
          diverged = !sched_->count_step(nonfinite);
          metrics[training::metric::kNumSkippedSteps] = sched_->skipped_steps();
        }
        if (train_log_) train_log_->write(metrics);  // the failing step's record too: it shows what went non-finite
        if (diverged) throw nonfinite_error();
        if (nonfinite && main_rank())
          std::printf("step %lld skipped: %s (%lld skipped so far, %lld in a row)\n", (long long)sched_->step(),
                      nonfinite_reason_.c_str(), (long long)sched_->skipped_steps(),
                      (long long)sched_->consecutive_skipped_steps());
        update_state(metrics);
        training::invoke(callbacks_.on_step_end, state_);
        progress.update({sched_->step(), sched_->epoch(), metrics["loss"], metrics["lr"], metrics["tps"],
                         metrics["grad_norm"].get<double>()});
        if (sched_->is_val_step() && val_size() > 0) validate();
        if (ckpt_.enabled && sched_->is_ckpt_step()) save_checkpoint();
        result_.steps_run += 1;
        if (!sched_->advance_step()) break;
      }
    }
    progress.close();
    training::invoke(callbacks_.on_train_end, state_);
    result_.stopped_by_signal = sched_->sigterm_flag();
    if (result_.stopped_by_signal && main_rank())
      std::printf("stopped on %s after step %lld%s\n", training::signal_name(sched_->stop_signal()).c_str(),
                  (long long)sched_->step() - 1,
                  ckpt_.enabled ? (", checkpoint " + result_.last_checkpoint).c_str()
                                : " (checkpointing is disabled: no checkpoint written)");
  }

  // Stopping for a non-finite step (or too many skipped in a row): which step, what, and what is safe to resume.
  Error nonfinite_error() const {
    const int64_t step = sched_->step();
    std::string what = "training stopped at step " + std::to_string(step) + ": " + nonfinite_reason_;
    std::string hint = "lower optimizer.lr (or the warmup's peak) or set clip_grad_norm.max_norm";
    if (sched_->skip_nonfinite_steps()) {
      what += "; that makes " + std::to_string(sched_->consecutive_skipped_steps()) +
              " skipped steps in a row, more than step_scheduler.max_consecutive_skipped_steps = " +
              std::to_string(sched_->max_consecutive_skipped_steps()) + ": training diverged";
    } else {
      hint += ", or set step_scheduler.skip_nonfinite_steps: true to skip such steps";
    }
    const std::optional<std::string> latest =
        ckpt_.enabled ? checkpoint::read_latest_pointer(ckpt_.dir) : std::optional<std::string>();
    if (latest)
      hint += "; the last checkpoint, " + *latest + " (LATEST), holds finite weights to resume from";
    else
      hint += "; no checkpoint was written";
    return Error(what, (fs::path(ckpt_.dir) / "training.jsonl").string() + ", step " + std::to_string(step), hint);
  }

  // The callbacks' view: step, epoch, the last training loss and every numeric metric logged so far.
  void update_state(const nlohmann::ordered_json& record) {
    state_.step = record.at("step").get<int64_t>();
    state_.epoch = record.at("epoch").get<int64_t>();
    for (const auto& [key, value] : record.items())
      if (value.is_number() && key != "step" && key != "epoch") state_.metrics[key] = value.get<double>();
    if (record.contains(training::metric::kLoss)) state_.loss = record.at(training::metric::kLoss).get<double>();
  }

  // This rank's part of a global batch: the local_batch_size indices at its rank (fewer, or none, in a short last
  // batch), so the ranks together see exactly what one process with local_batch_size x dp would.
  std::vector<size_t> rank_slice(const std::vector<size_t>& global) const {
    if (comm_.size() == 1) return global;
    const size_t local = size_t(loader_->batch_size() / dist_.dp_size);
    const size_t begin = std::min(global.size(), size_t(comm_.rank()) * local);
    return {global.begin() + std::ptrdiff_t(begin),
            global.begin() + std::ptrdiff_t(std::min(global.size(), begin + local))};
  }

  // One padding token whose label is masked: a rank's stand-in for an empty slice under fsdp2.
  data::Batch padding_batch() const {
    data::Sample s;
    s.input_ids = {tok_.pad_id};
    s.labels = {-100};
    return data::default_collater({&s}, tok_.pad_id, std::nullopt, 1);
  }

  // Image-text recipes: NeMo's VLM datasets (conversations) and collate, with the model directory's processor (or
  // the processor section's).
  void build_image_text_data(int64_t pack_size) {
    if (pack_size > 0)
      throw Error("packed_sequence is not supported for image-text models", cfg_.at("packed_sequence").where(),
                  "remove packed_sequence (each conversation is one row, its images expanded to their tokens)");
    if (!is_vlm_dataset(cfg_.at("dataset")))
      throw Error("an image-text model needs a vision-language dataset", cfg_.at("dataset").where(),
                  "use one of NeMo's VLM datasets, e.g. nemo_automodel.components.datasets.vlm.datasets."
                  "make_cord_v2_dataset, or automodel.datasets.vlm.make_conversation_dataset for local conversations");
    RecipeVlmDataset train = build_recipe_vlm_dataset(cfg_, "dataset");
    processor_ = std::move(train.processor);
    train_conversations_ = std::move(train.data);
    train_vlm_collate_ = train.collate;
    if (const ConfigNode* v = cfg_.find("validation_dataset"); v && !v->is_null()) {
      RecipeVlmDataset val = build_recipe_vlm_dataset(cfg_, "validation_dataset");
      val_conversations_ = std::move(val.data);
      val_vlm_collate_ = val.collate;
    }
  }

  size_t train_size() const { return image_text_ ? train_conversations_.size : train_data_.size; }
  size_t val_size() const { return image_text_ ? val_conversations_.size : val_data_.size; }

  // The batch of these indices of the training or validation split. An empty `indices` (a rank's empty slice of a
  // short last batch) gives a batch without tensors.
  data::Batch collate(bool validation, const std::vector<size_t>& indices) const {
    if (indices.empty()) return {};
    if (image_text_) {
      const data::ConversationDataset& data = validation ? val_conversations_ : train_conversations_;
      std::vector<data::Conversation> conversations;
      for (size_t i : indices) conversations.push_back(data.get(i));
      std::vector<const data::Conversation*> rows;
      for (const data::Conversation& c : conversations) rows.push_back(&c);
      return vlm_collate(rows, *processor_, validation ? val_vlm_collate_ : train_vlm_collate_);
    }
    const data::Dataset& data = validation ? val_data_ : train_data_;
    const LoaderOptions& o = validation ? val_loader_opts_ : train_loader_opts_;
    std::vector<data::Sample> samples;
    samples.reserve(indices.size());
    for (size_t i : indices) samples.push_back(data.get(i));
    std::vector<const data::Sample*> rows;
    for (const data::Sample& s : samples) rows.push_back(&s);
    return data::default_collater(rows, tok_.pad_id, std::nullopt, o.pad_to_multiple_of);
  }

  // Positions past max_position_embeddings are computed (RoPE extrapolates, as in transformers) but lie outside
  // what the model was trained on: a warning, not an error.
  data::Dataset beyond_max_positions_warned(data::Dataset d, const std::string& section) const {
    return data::warn_on_long_samples(std::move(d), size_t(model_->config().max_position_embeddings),
                                      cfg_.at(section).where() + ": " + section, "max_position_embeddings",
                                      "positions past it are outside the model's trained range; set " + section +
                                          ".seq_length and truncation: longest_first to cut samples");
  }

  // Sum of the batch's per-token cross-entropy divided by `denominator` (the step's label tokens). The default
  // FusedLinearCrossEntropy takes the hidden states and the LM-head weight and never forms the logits; under
  // validation's NoGradGuard it computes the loss alone. `aux` (when given) gets the sum of the model's auxiliary
  // losses (undefined when it has none).
  Tensor loss_of(const data::Batch& b, int64_t denominator, bool training, Tensor* aux = nullptr) const {
    models::ForwardOptions fo;
    fo.training = training;
    // Packed rows confine attention by sequence id (pack padding has its own id); the model takes one or the other.
    if (b.seq_ids.defined()) {
      fo.seq_ids = b.seq_ids;
      fo.position_ids = b.position_ids;
    } else {
      fo.attention_mask = b.attention_mask;
    }
    fo.checkpoint_layers = checkpoint_layers_;
    if (reducer_) fo.layer_hooks = reducer_->hooks();
    if (sharded_) fo.layer_hooks = sharded_->hooks();
    models::DecoderInput input(b.input_ids);
    input.pixel_values = b.pixel_values;
    input.token_type_ids = b.token_type_ids;
    models::DecoderOutput decoded = model_->forward_hidden(input, fo);
    if (aux)
      for (const Tensor& a : decoded.aux_losses) *aux = aux->defined() ? ops::add(*aux, a) : a;
    const Tensor& hidden = decoded.hidden;
    switch (loss_.kind) {
      case LossFunction::Kind::FusedLinear:
        // train_step backpropagates the loss right away, so d(weight) can go straight into the flat gradient buffer.
        return loss::FusedLinearCrossEntropy(loss_.chunk_len, loss_.ignore_index,
                                             model_->config().final_logit_softcapping)
            .set_weight_grad_in_place(true)(hidden, model_->lm_head_weight(), b.labels, denominator);
      case LossFunction::Kind::Chunked:
        return loss::ChunkedCrossEntropy(loss_.chunk_len, loss_.ignore_index)(model_->logits(hidden), b.labels,
                                                                              denominator);
      case LossFunction::Kind::Masked: break;
    }
    return loss::MaskedCrossEntropy(loss_.fp32_upcast, loss_.ignore_index)(model_->logits(hidden), b.labels,
                                                                           denominator);
  }

  // One optimizer step over the micro-batches (gradient accumulation); the loss is normalised by the step's label
  // tokens across all micro-batches, as NeMo Automodel's recipe does.
  nlohmann::ordered_json train_step(const std::vector<data::Batch>& micro_batches) {
    int64_t num_label_tokens = 0, num_tokens = 0;
    for (const auto& b : micro_batches) {
      if (!b.input_ids.defined()) continue;
      num_label_tokens += b.num_label_tokens;
      num_tokens += tokens_without_tail_padding(b.labels);
    }
    // Over all ranks, so that each rank's loss is its share of the global batch's mean and the summed gradients are
    // one process's with the global batch (as NeMo Automodel's recipe does).
    num_label_tokens = comm_.all_reduce(num_label_tokens);
    num_tokens = comm_.all_reduce(num_tokens);
    double loss_sum = 0.0, aux_sum = 0.0;
    bool has_aux = false;
    if (sharded_) sharded_->begin_step(/*backward=*/true);
    for (size_t i = 0; i < micro_batches.size(); ++i) {
      const data::Batch& b = micro_batches[i];
      // ddp reduces the gradients after the step's last micro-batch only; fsdp2 after each (into the shards).
      if (reducer_) reducer_->begin_backward(i + 1 == micro_batches.size());
      if (b.input_ids.defined()) {
        Tensor aux;
        Tensor loss = loss_of(b, num_label_tokens, true, &aux);
        if (aux.defined()) {
          // A mean over the batch: each micro-batch's (on each rank) counts for its share of the step.
          aux = ops::scale(ops::to_dtype(aux, loss.dtype()), 1.0 / double(micro_batches.size() * comm_.size()));
          aux_sum += aux.item();
          has_aux = true;
          loss = ops::add(loss, aux);
        }
        loss_sum += loss.item();
        autograd::backward({loss});
      } else if (sharded_) {
        // A rank without samples still takes part in every layer's gather and reduction: a batch whose labels
        // are all masked contributes nothing.
        autograd::backward({loss_of(padding_batch(), num_label_tokens, true)});
      }
      if (reducer_) reducer_->finish_backward();
      if (sharded_) sharded_->finish_backward(i + 1 == micro_batches.size());
    }
    loss_sum = comm_.all_reduce(loss_sum);
    // On every rank (one without samples has no aux loss of its own), so that the collectives match.
    aux_sum = comm_.all_reduce(aux_sum);
    has_aux = comm_.all_reduce(int64_t(has_aux)) > 0;
    if (inject_nan_loss(sched_->step())) loss_sum = std::nan("");
    // A non-finite loss is known before the update: no step. A non-finite gradient norm only from the optimizer:
    // asked to skip, it updates nothing then (without skipping the training stops anyway).
    nonfinite_reason_.clear();
    double grad_norm = std::nan("");
    if (!std::isfinite(loss_sum)) {
      nonfinite_reason_ = "the loss is " + training::number_text(loss_sum);
      optimizer_->zero_grad();
    } else {
      // Norm, clipping, update and zero_grad in one pass over the parameters (the norm is logged as grad_norm).
      optim::StepOptions step_options;
      step_options.max_norm = max_grad_norm_;
      step_options.zero_grad = true;
      step_options.skip_if_nonfinite = sched_->skip_nonfinite_steps();
      if (sharded_)
        step_options.global_norm = [this](double local) { return std::sqrt(shard_comm_->all_reduce(local * local)); };
      grad_norm = optimizer_->step(step_options);
      if (!std::isfinite(grad_norm)) nonfinite_reason_ = "the gradient norm is " + training::number_text(grad_norm);
    }
    if (sharded_) sharded_->end_step();
    const double lr = optimizer_->param_groups().front().lr.value_or(0.0);
    // The schedule counts updates (as Megatron's does): a skipped step leaves it where it is.
    if (lr_sched_ && nonfinite_reason_.empty()) lr_sched_->step(1);

    const auto now = Clock::now();
    const double seconds = std::chrono::duration<double>(now - last_time_).count();
    last_time_ = now;
    const double tps = seconds > 0 ? double(num_tokens) / seconds : 0.0;
    namespace m = training::metric;
    nlohmann::ordered_json record = training::metrics_record(
        sched_->step(), sched_->epoch(),
        {{m::kLoss, loss_sum},
         {m::kGradNorm, grad_norm},
         {m::kLr, lr},
         {m::kMem, peak_memory_gib()},
         {m::kMemHeld, double(CachingAllocator::cpu().stats().current_bytes) / double(1 << 30)},
         {m::kTps, tps},
         {m::kTpsPerGpu, tps / comm_.size()},
         {m::kNumTokensPerStep, num_tokens},
         {m::kNumLabelTokens, num_label_tokens}});
    if (has_aux) record[m::kAuxLoss] = aux_sum;
    if (reducer_ || sharded_) {
      const double total = reducer_ ? reducer_->exposed_seconds() : sharded_->exposed_seconds();
      record[m::kGradSyncWait] = total - std::exchange(sync_wait_seconds_, total);
    }
    return record;
  }

  // ---- validation: summed token loss over the whole validation set / its label tokens ------------------------------
  void validate() {
    NoGradGuard no_grad;
    if (peft_) peft::set_lora_training(*model_, false);
    data::DataLoader loader(val_size(), loader_->batch_size(), false, 0, false);
    loader.set_epoch(0);
    double total = 0.0;
    int64_t label_tokens = 0;
    std::vector<size_t> indices;
    if (sharded_) sharded_->begin_step(/*backward=*/false);
    while (loader.next(indices)) {
      data::Batch b = collate(/*validation=*/true, rank_slice(indices));
      if (!b.input_ids.defined()) {
        if (sharded_) loss_of(padding_batch(), 1, false);  // the layers' gathers need every rank
        continue;
      }
      total += loss_of(b, 1, false).item();
      label_tokens += b.num_label_tokens;
    }
    if (sharded_) sharded_->end_step();
    total = comm_.all_reduce(total);
    label_tokens = comm_.all_reduce(label_tokens);
    namespace m = training::metric;
    const nlohmann::ordered_json record =
        training::metrics_record(sched_->step(), sched_->epoch(),
                                 {{m::kValLoss, label_tokens > 0 ? total / double(label_tokens) : 0.0},
                                  {m::kLr, optimizer_->param_groups().front().lr.value_or(0.0)},
                                  {m::kNumLabelTokens, label_tokens},
                                  {m::kMem, peak_memory_gib()}});
    if (peft_) peft::set_lora_training(*model_, true);
    update_state(record);
    if (!main_rank()) return;
    val_log_->write(record);
    training::invoke(callbacks_.on_validation_end, state_);
    std::cout << training::format_val_line(record) << std::endl;
  }

  // ---- checkpoints -------------------------------------------------------------------------------------------------
  std::vector<std::string> tokenizer_files() const {
    std::vector<std::string> files;
    for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                             "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt",
                             "processor_config.json", "preprocessor_config.json", "chat_template.json"})
      if (fs::exists(fs::path(tok_.dir) / name)) files.push_back((fs::path(tok_.dir) / name).string());
    return files;
  }

  // The first NaN or infinite trainable weight: frozen parameters are as loaded, the trainable ones are what steps
  // and checkpoints change.
  std::optional<training::NonFiniteValue> nonfinite_weight() const {
    std::vector<std::pair<std::string, Tensor>> trainable;
    for (auto& [name, p] : model_->named_parameters())
      if (p.requires_grad()) trainable.emplace_back(name, p);
    return training::find_nonfinite(trainable);
  }

  // Weights that are not finite never become a checkpoint (rotation would then remove the good ones).
  void check_weights_finite(const std::string& name) const {
    const std::optional<training::NonFiniteValue> bad = nonfinite_weight();
    if (!bad) return;
    const std::optional<std::string> latest = checkpoint::read_latest_pointer(ckpt_.dir);
    throw Error("the weights after step " + std::to_string(sched_->step()) + " are not finite (" + bad->tensor + "[" +
                    std::to_string(bad->index) + "] = " + training::number_text(bad->value) +
                    "): training stopped without writing checkpoint " + name,
                (fs::path(ckpt_.dir) / name).string(),
                "lower optimizer.lr or set clip_grad_norm.max_norm" +
                    (latest ? "; the last checkpoint, " + *latest + " (LATEST), holds finite weights to resume from"
                            : std::string("; no checkpoint was written")));
  }

  // The training state a checkpoint holds, one entry per part: save_checkpoint writes every part and restore reads
  // every part back, so a part cannot be written and left unread (a part is constructed with both). Each part is a
  // file or directory of NeMo Automodel's layout, under the checkpoint's directory.
  class CheckpointPart {
   public:
    using Io = std::function<void(const fs::path&)>;
    CheckpointPart(std::string what, std::string path, Io save, Io restore, bool every_rank_saves = false)
        : what(std::move(what)),
          path(std::move(path)),
          save(std::move(save)),
          restore(std::move(restore)),
          every_rank_saves(every_rank_saves) {}
    std::string what, path;
    Io save, restore;
    bool every_rank_saves;  // each rank writes its own part of it (fsdp2's shards); otherwise the first rank
  };

  std::vector<CheckpointPart> checkpoint_parts() {
    namespace layout = checkpoint::layout;
    // The optimizer's file also holds the LR scheduler's position (NeMo keeps it with the optimizer state).
    const std::string lr_steps_key = "lr_scheduler_num_steps";
    return {
        // With LoRA only the adapter is saved (in peft's format, loadable by PeftModel.from_pretrained); the base
        // model is the one the recipe names.
        // Under fsdp2 each rank also writes its shard of the weights (model/sharded/, beside model/consolidated/),
        // which a sharded resume reads without gathering the model.
        CheckpointPart(
            "model weights", peft_ ? layout::kModelDir : layout::kConsolidatedDir,
            [this](const fs::path& dir) {
              if (peft_) {
                peft::save_adapter(*model_, dir.string(), *peft_, model_dir_);
              } else {
                if (main_rank()) checkpoint::save_consolidated_model(*model_, dir.string(), tokenizer_files());
                if (writes_shards()) save_model_shard(dir.parent_path() / "sharded");
              }
              fault_injection_point("checkpoint_save");
            },
            [this](const fs::path& dir) {
              if (sharded_ && !peft_ && fs::exists(dir.parent_path() / "sharded" / "index.json")) {
                std::map<std::string, Tensor> stretches = sharded_->parameter_stretches();
                checkpoint::load_model_shard((dir.parent_path() / "sharded").string(), stretches,
                                             state_ranges(sharded_->parameter_ranges()));
                return;
              }
              // fsdp2: loaded into the gathered full parameters, each rank's shard then takes its part.
              if (sharded_) sharded_->gather_all();
              if (peft_)
                load_adapter_weights((dir / "adapter_model.safetensors").string());
              else
                checkpoint::load_model_weights(*model_, dir.string());
              if (sharded_) {
                sharded_->take_shards_from_full();
                sharded_->release_all();
              }
            },
            /*every_rank_saves=*/sharded_ != nullptr && !peft_),
        CheckpointPart(
            "optimizer state and LR scheduler position", layout::kOptimDir,
            [this, lr_steps_key](const fs::path& dir) {
              const nlohmann::json extra = {{"optimizer", optimizer_->name()},
                                            {lr_steps_key, lr_sched_ ? lr_sched_->num_steps() : 0}};
              if (writes_shards())
                checkpoint::save_optimizer_shard(dir.string(), shard_comm_->rank(), shard_comm_->size(),
                                                 optimizer_->state_dict(), optimizer_state_ranges(),
                                                 optimizer_->step_counts(), extra);
              else if (!sharded_)
                checkpoint::save_optimizer_state(dir.string(), optimizer_->state_dict(), optimizer_->step_counts(),
                                                 extra);
            },
            [this, lr_steps_key](const fs::path& dir) {
              // The saved tensors (one process's, or the shards of a run of any number of ranks) go into
              // state_dict()'s, then back into the optimizer, which splits the fp32 masters into bf16 parameter +
              // residual.
              std::map<std::string, Tensor> state = optimizer_->state_dict();
              const checkpoint::OptimizerStateFiles optim =
                  checkpoint::load_optimizer_state_ranges(dir.string(), state, optimizer_state_ranges());
              optimizer_->load_state_dict(state);
              optimizer_->set_step_counts(optim.step_counts);
              if (lr_sched_) lr_sched_->set_num_steps(optim.extra.at(lr_steps_key).get<int64_t>());
            },
            /*every_rank_saves=*/sharded_ != nullptr),
        CheckpointPart(
            "dataloader position", std::string(layout::kDataloaderDir) + "/dataloader.json",
            [this](const fs::path& file) { checkpoint::save_json(file.string(), loader_->state_dict()); },
            [this](const fs::path& file) { loader_->load_state_dict(checkpoint::load_json(file.string())); }),
        CheckpointPart(
            "RNG state", layout::kRngDir,
            [](const fs::path& dir) {
              checkpoint::save_rng_state(dir.string(), {{"default", default_generator().state()}});
            },
            [](const fs::path& dir) {
              default_generator().set_state(checkpoint::load_rng_state(dir.string()).at("default"));
            }),
        CheckpointPart(
            "step scheduler position", layout::kStepSchedulerFile,
            [this](const fs::path& file) { checkpoint::save_json(file.string(), sched_->state_dict()); },
            [this](const fs::path& file) { sched_->load_state_dict(checkpoint::load_json(file.string())); }),
    };
  }

  // Under ddp every rank holds the whole state: the first rank writes it while the others wait, so no rank goes on
  // (or ends) before the checkpoint is complete.
  // Under fsdp2 the full parameters are gathered for the consolidated model and every rank writes its optimizer
  // shard into the first rank's stage; the checkpoint is published only when every rank's part is written.
  void save_checkpoint() {
    const std::string name = checkpoint::checkpoint_name(sched_->epoch(), sched_->step());
    if (sharded_) sharded_->gather_all();
    std::optional<checkpoint::CheckpointStage> stage;
    std::string staging;
    if (main_rank()) {
      check_weights_finite(name);
      stage.emplace(ckpt_.dir, name);
      staging = stage->path();
      // The resolved recipe, for the reader: a resumed run takes its recipe from the command line.
      checkpoint::save_text((fs::path(staging) / checkpoint::layout::kConfigFile).string(), cfg_.to_yaml());
    }
    if (sharded_) staging = comm_.all_gather_text(staging)[0];
    for (const CheckpointPart& part : checkpoint_parts())
      if (main_rank() || part.every_rank_saves) part.save(fs::path(staging) / part.path);
    if (sharded_) sharded_->release_all();
    comm_.barrier();
    if (main_rank()) {
      stage->publish(ckpt_.max_recent);
      result_.last_checkpoint = stage->final_path();
      training::invoke(callbacks_.on_checkpoint, state_, result_.last_checkpoint);
      std::cout << "saved checkpoint " << result_.last_checkpoint << std::endl;
    } else {
      result_.last_checkpoint = (fs::path(ckpt_.dir) / name).string();
    }
    comm_.barrier();
  }

  // Under fsdp2, the ranks that write their shards of the weights and optimizer state: under HSDP the first group
  // (the others hold the same).
  bool writes_shards() const { return sharded_ && (!replica_group_ || replica_group_->rank() == 0); }

  // model/sharded/: this rank's stretches; the first rank adds the index naming every shard rank's.
  void save_model_shard(const fs::path& dir) {
    checkpoint::save_model_shard(dir.string(), shard_comm_->rank(), sharded_->parameter_stretches());
    if (!main_rank()) return;
    std::vector<std::map<std::string, checkpoint::StateRange>> ranges;
    for (int r = 0; r < shard_comm_->size(); ++r) ranges.push_back(state_ranges(sharded_->parameter_ranges(r)));
    std::map<std::string, Tensor> parameters;  // the sharded ones
    for (const auto& [name, p] : model_->named_parameters())
      for (const auto& rank_ranges : ranges)
        if (rank_ranges.count(name)) parameters[name] = p;
    checkpoint::save_model_shard_index(dir.string(), parameters, ranges);
  }

  static std::map<std::string, checkpoint::StateRange> state_ranges(
      const std::map<std::string, distributed::ShardedParameters::Range>& ranges) {
    std::map<std::string, checkpoint::StateRange> out;
    for (const auto& [name, r] : ranges) out[name] = {r.offset, r.numel, r.total};
    return out;
  }

  // The part of each optimizer state tensor this rank holds under fsdp2: for "<parameter>.<key>..." the parameter's
  // range, in the state's units (one per element, or per k elements: AdamW8bit's codes (4 to an i32) and block
  // scales); empty otherwise (every tensor whole).
  std::map<std::string, checkpoint::StateRange> optimizer_state_ranges() {
    std::map<std::string, checkpoint::StateRange> out;
    if (!sharded_) return out;
    const auto params = sharded_->parameter_ranges();
    for (const auto& [key, t] : optimizer_->state_dict()) {
      // The longest parameter name the key starts with ("w.exp_avg" and "w.exp_avg.codes" are both w's).
      auto it = params.end();
      for (size_t dot = key.rfind('.'); dot != std::string::npos && dot > 0; dot = key.rfind('.', dot - 1))
        if ((it = params.find(key.substr(0, dot))) != params.end()) break;
      if (it == params.end() || t.numel() == 0 || it->second.numel % t.numel() != 0) continue;
      const int64_t k = it->second.numel / t.numel();
      if (it->second.offset % k == 0 && it->second.total % k == 0)
        out[key] = {it->second.offset / k, t.numel(), it->second.total / k};
    }
    return out;
  }

  // Resumes from checkpoint.restore_from (LATEST, a name under checkpoint_dir, or a path), or — as NeMo Automodel
  // does when it is unset — from the latest complete checkpoint in checkpoint_dir if there is one.
  bool restore() {
    const std::optional<std::string> path =
        checkpoint::resolve_restore_path(ckpt_.dir, ckpt_.restore_from.value_or("LATEST"));
    if (!path) return false;
    const fs::path p = *path;
    check_checkpoint_kind(p);
    if (main_rank()) std::cout << "resuming from " << *path << std::endl;
    for (const CheckpointPart& part : checkpoint_parts()) {
      if (!fs::exists(p / part.path))
        throw Error(
            "the checkpoint has no " + part.what + " (" + part.path + ")", (p / part.path).string(),
            "resume from a complete checkpoint: " + checkpoint::available_checkpoints(p.parent_path().string()));
      // A part that cannot be read (damaged, or non-finite weights a build that saved whatever the weights were
      // wrote): training from it would only stop again, so the error lists the checkpoints to resume from instead.
      try {
        part.restore(p / part.path);
      } catch (const Error& e) {
        throw Error(e.what_part(), e.where(),
                    e.hint() + "; or resume from an earlier checkpoint (checkpoint.restore_from: its name): " +
                        checkpoint::available_checkpoints(p.parent_path().string()));
      }
    }
    check_step_matches_name(p);
    return true;
  }

  // A LoRA checkpoint holds only the adapter, a full one only the consolidated model: restoring one into the other
  // kind of run would otherwise fail on a missing file.
  void check_checkpoint_kind(const fs::path& p) const {
    namespace layout = checkpoint::layout;
    const bool adapter = fs::exists(p / layout::kModelDir / "adapter_model.safetensors");
    const bool full = fs::exists(p / layout::kConsolidatedDir);
    const std::string config = (p / layout::kConfigFile).string();
    if (peft_ && !adapter && full)
      throw Error(
          "the checkpoint holds a fully fine-tuned model (model/consolidated/, no adapter) but this recipe "
          "trains a LoRA adapter (it has a peft: section)",
          p.string(),
          "remove the peft: section to continue that full fine-tuning, or give this run a fresh "
          "checkpoint.checkpoint_dir; to train LoRA on top of those weights, set "
          "model.pretrained_model_name_or_path to " +
              (p / layout::kConsolidatedDir).string());
    if (!peft_ && adapter && !full)
      throw Error(
          "the checkpoint holds a LoRA adapter (model/adapter_model.safetensors) but this recipe fine-tunes "
          "the whole model (it has no peft: section)",
          p.string(),
          "add the peft: section the checkpoint was trained with (see " + config +
              ") to continue its LoRA training, or give this run a fresh checkpoint.checkpoint_dir");
  }

  // step_scheduler.json of epoch_E_step_S is saved inside step S, before it ends: {"step": S + 1, "epoch": E}.
  void check_step_matches_name(const fs::path& p) const {
    const auto name = checkpoint::parse_checkpoint_name(p.string());
    if (!name) return;  // a checkpoint under another name: nothing to compare with
    const auto [epoch, step] = *name;
    if (sched_->step() == step + 1 && sched_->epoch() == epoch) return;
    throw Error("the checkpoint's step_scheduler.json says step " + std::to_string(sched_->step()) + ", epoch " +
                    std::to_string(sched_->epoch()) + " but its name " + checkpoint::checkpoint_name(epoch, step) +
                    " says step " + std::to_string(step + 1) + " (the one after step " + std::to_string(step) +
                    "), epoch " + std::to_string(epoch),
                (p / checkpoint::layout::kStepSchedulerFile).string(),
                "the directory was renamed or the file edited: restore from the checkpoint under its own name");
  }

  // Copies a saved adapter into the live adapter parameters (the optimizer holds them), keyed by peft's names.
  void load_adapter_weights(const std::string& file) {
    std::map<std::string, Tensor> adapters;
    for (auto& [name, p] : model_->named_parameters())
      if (p.requires_grad()) adapters.emplace(peft::adapter_tensor_name(model_->module_name(name)), p);
    checkpoint::load_tensors_into(file, adapters, /*require_finite=*/true);
  }

  bool main_rank() const { return comm_.rank() == 0; }

  // Every rank must run the same recipe (the same overrides included): a difference would make them disagree on
  // shapes and steps and hang in a collective instead of failing.
  void check_ranks_agree() const {
    const std::vector<std::string> recipes = comm_.all_gather_text(cfg_.to_yaml());
    for (size_t r = 1; r < recipes.size(); ++r)
      if (recipes[r] != recipes[0])
        throw Error("rank " + std::to_string(r) + " runs a different recipe than rank 0", "distributed job",
                    "start every rank with the same recipe file and the same --section.key overrides");
  }

  const ConfigNode& cfg_;
  const training::Callbacks& callbacks_;
  distributed::Communicator& comm_ = distributed::world();
  DistributedOptions dist_;
  training::TrainingState state_;
  uint64_t seed_ = 42;
  CheckpointOptions ckpt_;
  bool checkpoint_layers_ = false;
  std::string model_dir_;
  std::unique_ptr<models::LanguageModel> model_;
  std::optional<peft::PeftConfig> peft_;
  TokenizerBundle tok_;
  LossFunction loss_;
  data::Dataset train_data_, val_data_;
  bool image_text_ = false;  // an image-text model: its data are conversations, collated with the processor
  std::optional<VlmProcessor> processor_;
  data::ConversationDataset train_conversations_, val_conversations_;
  VlmCollateOptions train_vlm_collate_, val_vlm_collate_;
  LoaderOptions train_loader_opts_, val_loader_opts_;
  std::unique_ptr<data::DataLoader> loader_;
  std::unique_ptr<training::StepScheduler> sched_;
  std::vector<nn::FlatParameters> flat_buffers_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  std::unique_ptr<distributed::GradientReducer> reducer_;                   // ddp across ranks
  std::unique_ptr<distributed::ShardedParameters> sharded_;                 // fsdp2 across ranks
  std::unique_ptr<distributed::Communicator> shard_group_, replica_group_;  // HSDP
  distributed::Communicator* shard_comm_ = nullptr;                         // the ranks sharing sharded_
  double sync_wait_seconds_ = 0;  // exposed_seconds() of reducer_ or sharded_ after the previous step
  std::unique_ptr<optim::OptimizerParamScheduler> lr_sched_;
  std::optional<double> max_grad_norm_;
  std::unique_ptr<checkpoint::CheckpointDirLock> dir_lock_;
  std::unique_ptr<training::JsonlWriter> train_log_, val_log_;
  std::string nonfinite_reason_;  // the last step's: "" when its loss and gradient norm were finite
  bool restored_ = false;
  Clock::time_point last_time_;
  RunResult result_;
};

}  // namespace

RunResult run_llm_finetune(const ConfigNode& config, const training::Callbacks& callbacks) {
  register_recipe_targets();
  return FinetuneRun(config, callbacks).run();
}

RunResult run_recipe(const ConfigNode& config, const training::Callbacks& callbacks) {
  config::register_target(kFinetuneRecipe,
                          {"nemo_automodel.recipes.llm.train_ft.TrainFinetuneRecipeForNextTokenPrediction",
                           "nemo_automodel.recipes.llm.finetune.FinetuneRecipeForNextTokenPrediction"});
  config::register_target(kVlmFinetuneRecipe, {"nemo_automodel.recipes.vlm.finetune.FinetuneRecipeForVLM"});
  if (const ConfigNode* r = config.find("recipe"); r && !r->is_null()) {
    const std::string name = r->is_map() ? config::resolve_target(*r) : config::resolve_target(r->as_string());
    if (name != kFinetuneRecipe && name != kVlmFinetuneRecipe)
      throw Error("recipe '" + name + "' is not available", r->where(),
                  std::string("use ") + kFinetuneRecipe + " or " + kVlmFinetuneRecipe);
  }
  return run_llm_finetune(config, callbacks);
}

}  // namespace automodel::recipes
