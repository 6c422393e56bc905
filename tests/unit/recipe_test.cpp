// recipes/llm_finetune driven as a library: the callbacks fire in the order of NeMo Automodel's loop events, on the
// embedded tiny Llama and SQuAD-shaped data (assets/).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "components/config/config.h"
#include "recipes/llm_finetune.h"
#include "temp_dir.h"

namespace {

const std::filesystem::path kAssets = std::filesystem::path(__FILE__).parent_path() / ".." / ".." / "assets";

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

}  // namespace
