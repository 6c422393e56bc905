#pragma once
// The LLM fine-tuning datasets of NeMo Automodel (SQuAD, HellaSwag, column-mapped instruction data,
// OpenAI / ShareGPT chat) over local files. SQuAD, column-mapped and chat datasets read and tokenize each
// record when it is asked for (as NeMo's LazyMappedDataset), so time to the first step and memory do not grow
// with the dataset; HellaSwag, whose padding depends on every sample, is tokenized up front. A record's errors
// (a missing column, invalid JSON) therefore surface when the record is first used, naming its file and line.
// Options mirror NeMo's keyword arguments; padding / truncation take NeMo's string values.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "components/data/sample.h"

namespace automodel::data {

// NeMo make_squad_dataset. Records: {"context", "question", "answers": {"text": [...]}}.
// Plain prompt "Context: {context} Question: {question} Answer: " + first answer (stripped), loss on
// the answer tokens. With a chat template: [user: that prompt, assistant: answer], loss on the
// assistant turn.
struct SquadOptions {
  std::string path;  // local .json/.jsonl file or directory (NeMo's dataset_name)
  std::string split = "train";
  std::optional<int64_t> seq_length;
  std::optional<int64_t> limit_dataset_samples;  // becomes split "[:n]" unless the split has a slice
  std::string padding = "do_not_pad";            // "max_length" pads each sample to seq_length
  std::string truncation = "do_not_truncate";    // "longest_first"/"true" cuts to seq_length
  // Unset: the chat template is used when the tokenizer has one (NeMo's rule). true: require it.
  std::optional<bool> use_chat_template;
  std::optional<std::string> start_of_turn_token;  // accepted for NeMo configs; unused (as in NeMo)
};
Dataset make_squad_dataset(const TextTokenizer& tok, const SquadOptions& opts);

// NeMo HellaSwag (SFTSingleTurnPreprocessor). Records: {"ctx", "endings": [...], "label"}.
// input = ctx tokens (trailing special dropped) + gold ending tokens (leading special dropped),
// loss on the ending; pad_to_max_length pads every sample to the dataset's longest rounded up to 8.
struct HellaSwagOptions {
  std::string path;
  std::string split = "train";
  std::optional<int64_t> num_samples_limit;  // split "[:n]"
  bool pad_to_max_length = true;
};
Dataset make_hellaswag_dataset(const TextTokenizer& tok, const HellaSwagOptions& opts);

// NeMo ColumnMappedTextInstructionDataset. column_mapping: {"context"?, "question"?, "answer"} ->
// record column (answer and at least one of context / question). Plain prompt
// "{context} {question} " + answer; with use_hf_chat_template and a chat template:
// [system: context, user: question, assistant: answer]. A sample whose labels are all masked is
// replaced by the next usable one (NeMo's __getitem__ does the same), so the length is unchanged.
struct ColumnMappedOptions {
  std::string path;
  std::string split = "train";
  std::map<std::string, std::string> column_mapping;
  bool answer_only_loss_mask = true;
  std::optional<int64_t> seq_length;
  std::optional<int64_t> limit_dataset_samples;  // the first n records after the split
  std::string padding = "do_not_pad";
  std::string truncation = "do_not_truncate";
  bool use_hf_chat_template = false;
};
Dataset make_column_mapped_dataset(const TextTokenizer& tok, const ColumnMappedOptions& opts);

// NeMo ChatDataset. Records: {"messages": [{role, content, tool_calls?, tool_call_id?}], "tools"?}
// (OpenAI) or {"conversations": [{from, value}]} (ShareGPT: human->user, gpt->assistant, ...).
// Rendered with the chat template; loss on every assistant turn (or the last only, mask_history).
struct ChatOptions {
  std::string path;
  std::string split = "train";
  std::optional<int64_t> seq_length;
  std::optional<int64_t> limit_dataset_samples;  // split "[:n]" unless the split has a slice
  std::string padding = "do_not_pad";
  std::string truncation = "do_not_truncate";
  bool answer_only_loss_mask = true;
  bool mask_history = false;
  std::optional<std::string> start_of_turn_token;  // accepted for NeMo configs; unused (as in NeMo)
};
Dataset make_chat_dataset(const TextTokenizer& tok, const ChatOptions& opts);

// OpenAI messages of one chat record, normalized as NeMo does (content lists joined, null -> "",
// tool_calls completed with id "call_<i>" / type "function" / JSON-string arguments, roles checked);
// `where` names the record in errors.
nlohmann::ordered_json chat_record_messages(const nlohmann::ordered_json& record, const std::string& where);
// The record's "tools" (a list or a JSON string of one); null when absent or empty.
nlohmann::ordered_json chat_record_tools(const nlohmann::ordered_json& record, const std::string& where);

// "split[:n]" when split has no slice yet (NeMo's limit_dataset_samples rule); Error when n <= 0.
std::string limit_split(const std::string& split, std::optional<int64_t> limit, const std::string& key);
// Error when the dataset is empty or every sample's labels are all kIgnoreIndex (looks at samples from the first
// until one has a label: normally one).
void check_trainable(const Dataset& data, const std::string& dataset, const std::string& path);

// Every sample made at once (packing and HellaSwag's padding need them all), and a Dataset over such a vector.
std::vector<Sample> materialize(const Dataset& data);
Dataset dataset_of(std::vector<Sample> samples);

// data whose get() prints one warning, for the first sample with more than max_inputs input tokens:
// "<what>: sample <i> has N input tokens, more than <limit_name> (max_inputs); <consequence>".
Dataset warn_on_long_samples(Dataset data, size_t max_inputs, std::string what, std::string limit_name,
                             std::string consequence);

}  // namespace automodel::data
