#pragma once
// Model weights in a checkpoint: model/consolidated/ in the Hugging Face layout (loadable by transformers,
// vLLM and AutoModelForCausalLM::from_pretrained), and reloading them into a live model on resume.
#include <string>
#include <vector>

#include "models/language_model.h"

namespace automodel::checkpoint {

// models::save_pretrained into dir (config.json, generation_config.json, model.safetensors or shards + index),
// plus copies of extra_files (tokenizer.json, tokenizer_config.json, ...; Error when one is missing).
void save_consolidated_model(const models::LanguageModel& model, const std::string& dir,
                             const std::vector<std::string>& extra_files_to_copy = {});

// Copies the weights saved in dir (a Hugging Face directory, sharded or not) into the model's existing
// parameters, so flat buffers and optimizer bindings stay valid; converts dtype when the file's differs.
// Error naming the tensor on a missing or unexpected tensor, a shape mismatch, an integer-typed tensor or a NaN / Inf
// value; nothing is written unless everything matches. Tensor names and layout are the model's
// StateDictAdapter's, as save_consolidated_model writes them.
void load_model_weights(models::LanguageModel& model, const std::string& dir);

}  // namespace automodel::checkpoint
