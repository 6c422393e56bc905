#pragma once
// recipes/llm_finetune: NeMo Automodel's TrainFinetuneRecipeForNextTokenPrediction in C++ — supervised fine-tuning of
// a causal LM from a recipe YAML: setup, then the train loop with gradient accumulation, validation and checkpoints.
#include <cstdint>
#include <string>

#include "components/config/config.h"
#include "components/training/training_state.h"

namespace automodel::recipes {

struct RunResult {
  int64_t steps_run = 0;  // optimizer steps taken by this process
  bool stopped_by_signal = false;
  std::string last_checkpoint;  // "" when none was written
};

// `config` is the resolved recipe (overrides applied); it is written into every checkpoint as config.yaml.
// `callbacks` are invoked at train start, after every optimizer step, after each validation, after each published
// checkpoint and at train end.
RunResult run_llm_finetune(const config::ConfigNode& config, const training::Callbacks& callbacks = {});

// Runs the recipe named by the config's `recipe._target_` (the llm fine-tune recipe when absent).
RunResult run_recipe(const config::ConfigNode& config, const training::Callbacks& callbacks = {});

}  // namespace automodel::recipes
