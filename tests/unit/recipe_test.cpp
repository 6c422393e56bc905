// recipes/llm_finetune driven as a library: the callbacks fire in the order of NeMo Automodel's loop events, on the
// embedded tiny Llama and SQuAD-shaped data (assets/).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "components/checkpoint/checkpoint_dir.h"
#include "components/config/config.h"
#include "error_of.h"
#include "recipes/llm_finetune.h"
#include "temp_dir.h"

namespace {

const std::filesystem::path kAssets = std::filesystem::path(__FILE__).parent_path() / ".." / ".." / "assets";
using automodel::testing::error_of;
namespace fs = std::filesystem;

// A short run of the tiny Llama on 16 SQuAD samples into checkpoint_dir; `extra` adds or replaces sections.
automodel::config::ConfigNode tiny_recipe(const std::string& checkpoint_dir, const std::string& extra = "") {
  const std::string yaml =
      "step_scheduler: {global_batch_size: 4, local_batch_size: 2, max_steps: 4, ckpt_every_steps: 2}\n"
      "model: {_target_: nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained,\n"
      "        pretrained_model_name_or_path: " +
      (kAssets / "tiny-llama").string() +
      "}\n"
      "dataset: {_target_: nemo_automodel.components.datasets.llm.squad.make_squad_dataset,\n"
      "          dataset_name: " +
      (kAssets / "tiny-squad").string() +
      ", split: 'train[:16]'}\n"
      "optimizer: {_target_: torch.optim.AdamW, lr: 1.0e-3}\n"
      "checkpoint: {checkpoint_dir: " +
      checkpoint_dir + ", max_recent_checkpoints: 2}\n";
  automodel::config::ConfigNode config = automodel::config::parse_yaml(yaml, "recipe.yaml");
  if (!extra.empty()) {
    const automodel::config::ConfigNode more = automodel::config::parse_yaml(extra, "extra.yaml");
    for (const std::string& key : more.keys()) config.insert(key, more.at(key));
  }
  return config;
}

std::string latest_name(const std::string& checkpoint_dir) {
  const auto latest = automodel::checkpoint::read_latest_pointer(checkpoint_dir);
  return latest ? fs::path(*latest).filename().string() : "";
}

TEST(LlmFinetuneRecipe, CallbacksFollowTheLoop) {
  automodel::testing::TempDir dir;
  const std::string yaml =
      "step_scheduler: {global_batch_size: 4, local_batch_size: 2, max_steps: 3,\n"
      "                 ckpt_every_steps: 2, val_every_steps: 2}\n"
      "model: {_target_: nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained,\n"
      "        pretrained_model_name_or_path: " +
      (kAssets / "tiny-llama").string() +
      "}\n"
      "dataset: {_target_: nemo_automodel.components.datasets.llm.squad.make_squad_dataset,\n"
      "          dataset_name: " +
      (kAssets / "tiny-squad").string() +
      ", split: 'train[:16]'}\n"
      "validation_dataset: {_target_: automodel.datasets.llm.make_squad_dataset,\n"
      "          dataset_name: " +
      (kAssets / "tiny-squad").string() +
      ", split: 'validation[:4]'}\n"
      "optimizer: {_target_: torch.optim.AdamW, lr: 1.0e-3}\n"
      "checkpoint: {checkpoint_dir: " +
      dir.str() + "}\n";
  const auto config = automodel::config::parse_yaml(yaml, "recipe.yaml");

  std::vector<std::string> events;
  automodel::training::Callbacks callbacks;
  auto record = [&](const char* name) {
    return [&events, name](const automodel::training::TrainingState& s) {
      events.push_back(std::string(name) + " " + std::to_string(s.step));
    };
  };
  callbacks.on_train_start.push_back(record("start"));
  callbacks.on_step_end.push_back([&](const automodel::training::TrainingState& s) {
    EXPECT_GT(s.loss, 0.0);
    EXPECT_TRUE(s.metrics.count("grad_norm"));
    events.push_back("step " + std::to_string(s.step));
  });
  callbacks.on_validation_end.push_back([&](const automodel::training::TrainingState& s) {
    EXPECT_GT(s.metrics.at("val_loss"), 0.0);
    events.push_back("val " + std::to_string(s.step));
  });
  callbacks.on_checkpoint.push_back([&](const automodel::training::TrainingState& s, const std::string& path) {
    EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(path) / "model" / "consolidated" / "config.json"));
    events.push_back("ckpt " + std::filesystem::path(path).filename().string());
  });
  callbacks.on_train_end.push_back(record("end"));

  const automodel::recipes::RunResult r = automodel::recipes::run_llm_finetune(config, callbacks);
  EXPECT_EQ(r.steps_run, 3);
  EXPECT_FALSE(r.stopped_by_signal);
  // Validation every 2 steps (0-based step 1) and with every checkpoint; checkpoints every 2 steps and at the end.
  EXPECT_EQ(events, (std::vector<std::string>{"start 0", "step 0", "step 1", "val 1", "ckpt epoch_0_step_1", "step 2",
                                              "val 2", "ckpt epoch_0_step_2", "end 2"}));
}

// A diverging learning rate: the run stops with an Error naming the step and what went non-finite, and LATEST
// still names the checkpoint before it (rotation removed nothing good: no checkpoint of non-finite weights exists).
TEST(LlmFinetuneRecipe, ANonFiniteStepStopsTrainingAndKeepsTheLastGoodCheckpoint) {
  automodel::testing::TempDir dir;
  const auto config = tiny_recipe(dir.str(),
                                  "step_scheduler: {global_batch_size: 4, local_batch_size: 2, max_steps: 12,\n"
                                  "                 ckpt_every_steps: 1}\n"
                                  "optimizer: {_target_: torch.optim.AdamW, lr: 1.0e+6}\n");
  const std::string err = error_of([&] { automodel::recipes::run_llm_finetune(config); });
  ASSERT_NE(err.find("training stopped at step "), std::string::npos) << err;
  EXPECT_TRUE(err.find(": the gradient norm is nan") != std::string::npos ||
              err.find(": the loss is nan") != std::string::npos)
      << err;
  const int64_t stopped_at = std::stoll(err.substr(err.find("at step ") + 8));
  const auto latest = automodel::checkpoint::parse_checkpoint_name(latest_name(dir.str()));
  ASSERT_TRUE(latest.has_value()) << err;
  EXPECT_EQ(latest->second, stopped_at - 1);  // every step before was finite and checkpointed
  EXPECT_NE(err.find(latest_name(dir.str()) + " (LATEST), holds finite weights"), std::string::npos) << err;
  EXPECT_NE(err.find("skip_nonfinite_steps"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(fs::path(dir.str()) / automodel::checkpoint::kLockFile));  // released on the way out
}

// Weights that overflow in an update with a finite loss and gradient norm are caught before the checkpoint.
TEST(LlmFinetuneRecipe, NonFiniteWeightsAreNeverCheckpointed) {
  automodel::testing::TempDir dir;
  const auto config = tiny_recipe(dir.str(),
                                  "step_scheduler: {global_batch_size: 4, local_batch_size: 2, max_steps: 4,\n"
                                  "                 ckpt_every_steps: 1}\n"
                                  "optimizer: {_target_: torch.optim.SGD, lr: 1.0e+39}\n");
  const std::string err = error_of([&] { automodel::recipes::run_llm_finetune(config); });
  EXPECT_NE(err.find("the weights after step 0 are not finite"), std::string::npos) << err;
  EXPECT_NE(err.find("without writing checkpoint epoch_0_step_0"), std::string::npos) << err;
  EXPECT_TRUE(automodel::checkpoint::list_complete_checkpoints(dir.str()).empty());
  EXPECT_EQ(latest_name(dir.str()), "");
}

// A checkpoint of non-finite weights (an older build wrote them) is refused on resume, naming the tensor.
TEST(LlmFinetuneRecipe, ACheckpointOfNonFiniteWeightsIsNotResumedFrom) {
  automodel::testing::TempDir dir;
  automodel::recipes::run_llm_finetune(tiny_recipe(dir.str()));
  const fs::path weights = fs::path(dir.str()) / "epoch_0_step_3" / "model" / "consolidated" / "model.safetensors";
  std::fstream f(weights, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t header = 0;
  f.read(reinterpret_cast<char*>(&header), sizeof(header));
  const float nan = std::nanf("");
  f.seekp(std::streamoff(8 + header));  // the first element of the first tensor in the data
  f.write(reinterpret_cast<const char*>(&nan), sizeof(nan));
  f.close();
  const std::string err = error_of([&] { automodel::recipes::run_llm_finetune(tiny_recipe(dir.str())); });
  EXPECT_NE(err.find("model.embed_tokens.weight' in "), std::string::npos) << err;
  EXPECT_NE(err.find("non-finite value(s) (first: element 0 = nan)"), std::string::npos) << err;
  EXPECT_NE(err.find("epoch_0_step_1"), std::string::npos) << err;  // the earlier one, to resume from
}

TEST(LlmFinetuneRecipe, RestoringTheWrongKindOfCheckpointSaysWhatItHolds) {
  automodel::testing::TempDir lora_dir, full_dir;
  const std::string peft = "peft: {target_modules: ['*_proj'], dim: 4, alpha: 8}\n";
  automodel::recipes::run_llm_finetune(tiny_recipe(lora_dir.str(), peft));
  automodel::recipes::run_llm_finetune(tiny_recipe(full_dir.str()));
  std::string err = error_of([&] { automodel::recipes::run_llm_finetune(tiny_recipe(lora_dir.str())); });
  EXPECT_NE(err.find("the checkpoint holds a LoRA adapter"), std::string::npos) << err;
  EXPECT_NE(err.find("fine-tunes the whole model (it has no peft: section)"), std::string::npos) << err;
  err = error_of([&] { automodel::recipes::run_llm_finetune(tiny_recipe(full_dir.str(), peft)); });
  EXPECT_NE(err.find("the checkpoint holds a fully fine-tuned model"), std::string::npos) << err;
  EXPECT_NE(err.find("model.pretrained_model_name_or_path"), std::string::npos) << err;
}

TEST(LlmFinetuneRecipe, AStepSchedulerStateThatContradictsTheCheckpointNameIsAnError) {
  automodel::testing::TempDir dir;
  automodel::recipes::run_llm_finetune(tiny_recipe(dir.str()));
  const fs::path state = fs::path(dir.str()) / "epoch_0_step_1" / "step_scheduler.json";
  ASSERT_TRUE(fs::exists(state));
  std::ofstream(state) << R"({"step": 9, "epoch": 0})";
  const auto config =
      tiny_recipe(dir.str(), "checkpoint: {checkpoint_dir: " + dir.str() + ", restore_from: epoch_0_step_1}\n");
  const std::string err = error_of([&] { automodel::recipes::run_llm_finetune(config); });
  EXPECT_NE(err.find("step_scheduler.json says step 9, epoch 0 but its name epoch_0_step_1 says step 2"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find(state.string()), std::string::npos) << err;
}

TEST(LlmFinetuneRecipe, NonsenseValuesAreErrorsAtTheirKeys) {
  automodel::testing::TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"step_scheduler: {max_steps: -5}\n", "step_scheduler.max_steps must be >= 1, got -5"},
      {"step_scheduler: {local_batch_size: 0}\n", "step_scheduler.local_batch_size must be >= 1, got 0"},
      {"step_scheduler: {max_steps: 2, val_every_steps: 0}\n", "step_scheduler.val_every_steps must be >= 1"},
      {"step_scheduler: {max_steps: 2, preemption_signal: SIGFOO}\n", "unknown signal name 'SIGFOO'"},
      {"step_scheduler: {max_steps: 2, gc_every_steps: 0}\n", "step_scheduler.gc_every_steps must be >= 1, got 0"},
      {"clip_grad_norm: {max_norm: 0}\n", "clip_grad_norm.max_norm must be a positive finite number, got 0"},
      {"clip_grad_norm: {max_norm: -1.0}\n", "clip_grad_norm.max_norm must be a positive finite number, got -1"},
      {"clip_grad_norm: {max_norm: .nan}\n", "clip_grad_norm.max_norm must be a positive finite number, got nan"},
      {"clip_grad_norm: {max_norm: .inf}\n", "clip_grad_norm.max_norm must be a positive finite number, got inf"},
      {"packed_sequence: {packed_sequence_size: -8}\n", "packed_sequence.packed_sequence_size must be >= 0"},
      {"distributed: {dp_size: 0}\n", "distributed.dp_size must be >= 1 (or none), got 0"},
      {"distributed: {tp_size: 2}\n", "distributed.tp_size = 2: only data parallelism is built"},
      {"distributed: {dp_size: 2}\n", "distributed.dp_size = 2 but the job has 1 rank(s)"},
      {"distributed: {strategy: zero3}\n", "distributed.strategy 'zero3' is not available"},
  };
  for (const auto& [extra, expected] : cases) {
    const std::string err = error_of([&] { automodel::recipes::run_llm_finetune(tiny_recipe(dir.str(), extra)); });
    EXPECT_NE(err.find(expected), std::string::npos) << extra << " -> " << err;
    EXPECT_NE(err.find("extra.yaml:1"), std::string::npos) << extra << " -> " << err;  // the line of the value
  }
  std::ofstream(dir / "file") << "x";
  const std::string err =
      error_of([&] { automodel::recipes::run_llm_finetune(tiny_recipe((fs::path(dir.str()) / "file/ck").string())); });
  EXPECT_NE(err.find("cannot create the checkpoint directory: Not a directory"), std::string::npos) << err;
}

}  // namespace
