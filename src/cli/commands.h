#pragma once
// The subcommands of the automodel executable; each returns the process exit code.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/args.h"
#include "core/dtype.h"

namespace automodel::cli {

int run_inspect(const Args& args);        // models/: describe a model directory
int run_generate(const Args& args);       // models/: continue a prompt of token ids
int run_logprobs(const Args& args);       // models/: next-token log-probabilities of a sequence
int run_tokenize(const Args& args);       // tokenizer: text to ids
int run_chat_template(const Args& args);  // tokenizer: render a conversation with the chat template
int run_merge_lora(const Args& args);     // peft: merge a LoRA adapter into its base model
int run_preprocess(const Args& args);     // processor: a VLM's input_ids and pixel_values for text and images
// generate / logprobs ("command") on the image-text model in dir: a conversation with image files (--messages).
int run_image_text(const Args& args, const std::string& command, const std::string& dir);
// --dtype f32|bf16 (also float32|bfloat16).
DType parse_dtype(const std::string& s);
// A --messages file: a JSON list of chat messages (or an object with "messages"). `where` names the command.
nlohmann::ordered_json read_messages_file(const std::string& path, const std::string& where);
// recipes: `finetune llm -c recipe.yaml [overrides]` (args after "finetune") and `recipe.yaml [overrides]`.
int run_finetune(std::vector<std::string> args);
int run_recipe_file(const std::string& config_path, std::vector<std::string> args);
// Either: `command` + the overrides is what --nproc-per-node N re-runs as N ranks.
int run_recipe_command(const std::vector<std::string>& command, const std::string& config_path,
                       std::vector<std::string> args);
// recipes: `dataset -c recipe.yaml [...]`, the samples a recipe trains on as JSON lines.
int run_dataset(std::vector<std::string> args);

}  // namespace automodel::cli
