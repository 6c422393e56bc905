#pragma once
// Turning text into Samples as NeMo's formatting_utils does: prompt + answer without a chat
// template, or OpenAI messages through the chat template with loss on assistant turns only.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "components/data/sample.h"

namespace automodel::data {

struct FormatOptions {
  std::optional<int64_t> seq_length;
  bool pad_to_seq_length = false;  // NeMo padding="max_length": pad input_ids / labels to seq_length
  bool truncate = false;           // NeMo truncation=True/"longest_first": cut the tokens to seq_length
  bool answer_only_loss_mask = true;
  bool train_on_last_turn_only = false;  // NeMo mask_history: supervise only the final assistant turn
};

// NeMo's padding / truncation values, as strings ("do_not_pad", "max_length", "longest", "true",
// "false"; "do_not_truncate", "longest_first", "only_first", "true", "false"). Error on others.
bool padding_pads_to_max_length(const std::string& padding);
bool truncation_enabled(const std::string& truncation);
// Checks seq_length > 0 when set and fills FormatOptions from NeMo's keyword values.
FormatOptions make_format_options(std::optional<int64_t> seq_length, const std::string& padding,
                                  const std::string& truncation, bool answer_only_loss_mask);

// The id that pads input_ids: pad_id, else eos_id, else 0 (NeMo: `pad_token_id or eos_token_id`).
int64_t resolve_pad_id(const TextTokenizer& tok);

// Shifts one tokenized example into a Sample: input_ids = ids[:-1], labels[i] = ids[i+1] where
// mask[i+1] is set (kIgnoreIndex elsewhere), then pads to seq_length when asked. mask may be
// shorter than ids (missing entries count as 0), as with Python's zip.
Sample package_example(const std::vector<int64_t>& ids, const std::vector<int>& mask, int64_t pad_id,
                       const FormatOptions& opts);

// The answer-only loss mask of prompt + answer tokenized together: a token is the answer's when its span reaches
// past the prompt's first prompt_bytes bytes, and an inserted token (EOS) when it follows content. Tokenizing the
// prompt alone would be wrong: a prompt ending in a space gives a trailing " " token that, inside the full text,
// merges into the answer's first token (" 17" of " 1761"), so the answer's first token would go unsupervised.
std::vector<int> completion_mask(const TokenizedText& t, size_t prompt_bytes);

// prompt + answer tokenized together (special tokens added); with answer_only_loss_mask only the answer's tokens
// (completion_mask) take the loss. As in NeMo no EOS is appended here: the answer ends with whatever the tokenizer's
// post-processor adds.
Sample format_prompt_completion(const TextTokenizer& tok, const std::string& prompt, const std::string& answer,
                                const FormatOptions& opts);

// Messages rendered with the chat template and tokenized without special tokens. With
// answer_only_loss_mask the loss covers each assistant turn: the tokens between the render of
// messages[:k] and of messages[:k+1] (prefix renders without a generation prompt, so the assistant
// header is supervised too, as in NeMo). Error when the tokenizer has no chat template, when there is
// no assistant message, or when a prefix render is not a prefix of the full render.
Sample format_chat(const TextTokenizer& tok, const nlohmann::ordered_json& messages,
                   const nlohmann::ordered_json& tools, const FormatOptions& opts);

// json.dumps as Python writes it by default (", " and ": " separators, non-ASCII as \uXXXX).
std::string python_json_dumps(const nlohmann::ordered_json& value);

}  // namespace automodel::data
