#pragma once
// The files inside one checkpoint directory: the layout (NeMo Automodel's names), and small readers and writers
// for its parts — tensors (safetensors), JSON, text, optimizer state and RNG state. Writers go through a
// temporary file and a rename; readers check what they read and name the file and key in their errors.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "core/rng.h"
#include "core/tensor.h"

namespace automodel::checkpoint {

// <checkpoint_dir>/epoch_<E>_step_<S>/ holds:
namespace layout {
inline constexpr const char* kModelDir = "model";                      // PEFT adapters go here
inline constexpr const char* kConsolidatedDir = "model/consolidated";  // Hugging Face layout (full fine-tuning)
inline constexpr const char* kOptimDir = "optim";
inline constexpr const char* kDataloaderDir = "dataloader";
inline constexpr const char* kRngDir = "rng";
inline constexpr const char* kStepSchedulerFile = "step_scheduler.json";
inline constexpr const char* kConfigFile = "config.yaml";
inline constexpr const char* kLossesFile = "losses.json";  // {"train_loss", "val_loss"}, as NeMo
}  // namespace layout

// Writes tensors to a safetensors file. metadata: a JSON object whose values are stored as strings (strings as
// they are, anything else as its JSON text) in "__metadata__".
void save_tensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                  const nlohmann::json& metadata = nlohmann::json::object());
// Copies the file's tensors into existing tensors (e.g. views of flat buffers, which stay bound), bit for bit.
// Error naming the tensor on a missing or extra key, a shape or a dtype mismatch, or (with require_finite: model and
// optimizer state, where one would poison every later step) a NaN / Inf in a floating tensor; nothing is written
// unless everything matches.
void load_tensors_into(const std::string& path, std::map<std::string, Tensor>& tensors, bool require_finite = false);
// Every tensor of the file, as fresh copies.
std::map<std::string, Tensor> load_tensors(const std::string& path);

void save_json(const std::string& path, const nlohmann::json& value);
nlohmann::json load_json(const std::string& path);
void save_text(const std::string& path, const std::string& text);
std::string load_text(const std::string& path);

// optim/: optimizer.safetensors (the optimizer's state tensors) and optimizer.json ({"step_counts": {name: n},
// "extra": caller's JSON, e.g. the LR scheduler state}).
struct OptimizerStateFiles {
  std::map<std::string, int64_t> step_counts;
  nlohmann::json extra;
};
void save_optimizer_state(const std::string& dir, const std::map<std::string, Tensor>& state,
                          const std::map<std::string, int64_t>& step_counts,
                          const nlohmann::json& extra = nlohmann::json::object());
// Copies the saved tensors into `state` (as load_tensors_into with require_finite) and returns the step counts and
// extra JSON.
OptimizerStateFiles load_optimizer_state(const std::string& dir, std::map<std::string, Tensor>& state);
// optimizer.json alone (checked).
OptimizerStateFiles load_optimizer_meta(const std::string& meta_path);

// rng/rng_state.json: {"<generator name>": {"seed": s, "offset": o}}.
void save_rng_state(const std::string& dir, const std::map<std::string, GeneratorState>& generators);
std::map<std::string, GeneratorState> load_rng_state(const std::string& dir);

}  // namespace automodel::checkpoint
