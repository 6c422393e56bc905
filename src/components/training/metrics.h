#pragma once
// Training and validation metric logs as NeMo Automodel writes them: JSON Lines files (training.jsonl,
// validation.jsonl in the checkpoint directory) with one record per step, and its one-line log summaries.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace automodel::training {

// NeMo's metric names. Training: loss, grad_norm, lr, mem (peak memory, GiB), tps (tokens / s), tps_per_gpu,
// num_tokens_per_step, num_label_tokens (and mfu when known). Validation: val_loss, lr, num_label_tokens, mem.
namespace metric {
inline constexpr const char* kLoss = "loss";
inline constexpr const char* kGradNorm = "grad_norm";
inline constexpr const char* kLr = "lr";
inline constexpr const char* kMem = "mem";
inline constexpr const char* kTps = "tps";
inline constexpr const char* kTpsPerGpu = "tps_per_gpu";
inline constexpr const char* kNumTokensPerStep = "num_tokens_per_step";
inline constexpr const char* kNumLabelTokens = "num_label_tokens";
inline constexpr const char* kValLoss = "val_loss";
// Ours (step_scheduler.skip_nonfinite_steps): steps skipped so far for a non-finite loss or gradient norm.
inline constexpr const char* kNumSkippedSteps = "num_skipped_steps";
// Ours: memory (GiB) held after the step, i.e. what persists between steps: parameters, gradients, optimizer state
// (under fsdp2 this rank's shards of them).
inline constexpr const char* kMemHeld = "mem_held";
// Ours (data parallel): seconds this step's communication kept the first rank waiting, what compute did not hide:
// ddp's gradient all-reduce after backward; fsdp2's parameter gathers and gradient reduce-scatters.
inline constexpr const char* kGradSyncWait = "grad_sync_wait_s";
// Ours (models with router losses, e.g. MoE load balancing): the auxiliary losses' part of `loss`, already scaled by
// their coefficients (router_aux_loss_coef).
inline constexpr const char* kAuxLoss = "aux_loss";
}  // namespace metric

// "2025-06-01T12:34:56.789Z" (UTC, milliseconds), NeMo's record timestamp.
std::string iso_timestamp_utc(std::chrono::system_clock::time_point t = std::chrono::system_clock::now());

// NeMo's MetricsSample.to_dict(): {"step", "epoch", "timestamp", ...metrics} in that order.
nlohmann::ordered_json metrics_record(int64_t step, int64_t epoch, const nlohmann::ordered_json& metrics,
                                      const std::string& timestamp = iso_timestamp_utc());

// One JSON object per line, flushed after every line so a crash loses nothing already logged. Non-finite numbers
// are written as null (JSON has no NaN).
class JsonlWriter {
 public:
  // Creates the parent directories; append = false truncates an existing file.
  explicit JsonlWriter(const std::string& path, bool append = true);
  ~JsonlWriter();
  JsonlWriter(const JsonlWriter&) = delete;
  JsonlWriter& operator=(const JsonlWriter&) = delete;

  void write(const nlohmann::ordered_json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// "step 3 | epoch 0 | loss 2.3456 | grad_norm 1.2345 | lr 1.00e-04 | mem 0.00 GiB | tps 1234.00(1234.00/gpu) |
// num_label_tokens 77" — NeMo's training log line (missing metrics are left out).
std::string format_train_line(const nlohmann::ordered_json& record);
// "[val] name "default" | step 3 | epoch 0 | loss 2.3456 | lr 1.00e-04 | num_label_tokens 77".
std::string format_val_line(const nlohmann::ordered_json& record, const std::string& val_name = "default");

}  // namespace automodel::training
