#pragma once
// The subcommands of the automodel executable; each returns the process exit code.
#include "cli/args.h"

namespace automodel::cli {

int run_demo(const Args& args);
int run_inspect(const Args& args);        // models/: describe a model directory
int run_generate(const Args& args);       // models/: continue a prompt of token ids
int run_logprobs(const Args& args);       // models/: next-token log-probabilities of a sequence
int run_tokenize(const Args& args);       // tokenizer: text to ids
int run_chat_template(const Args& args);  // tokenizer: render a conversation with the chat template

}  // namespace automodel::cli
