// NeMo ColumnMappedTextInstructionDataset over local files.
#include <algorithm>

#include "components/data/formatting.h"
#include "components/data/llm_datasets.h"
#include "components/data/record_fields.h"
#include "components/data/records.h"
#include "core/error.h"

namespace automodel::data {

using ojson = nlohmann::ordered_json;

namespace {

void check_column_mapping(const std::map<std::string, std::string>& mapping) {
  const char* hint =
      "map answer and question (and optionally context) to columns, e.g. "
      "column_mapping: {context: passage, question: query, answer: response}";
  for (const auto& [role, column] : mapping)
    if (role != "context" && role != "question" && role != "answer")
      throw Error("unknown column_mapping key '" + role + "'", "dataset.column_mapping", hint);
  if (!mapping.count("answer")) throw Error("column_mapping has no 'answer'", "dataset.column_mapping", hint);
  if (mapping.size() < 2)
    throw Error("column_mapping needs 'context' or 'question' besides 'answer'", "dataset.column_mapping", hint);
}

}  // namespace

Dataset make_column_mapped_dataset(const TextTokenizer& tok, const ColumnMappedOptions& opts) {
  check_column_mapping(opts.column_mapping);
  FormatOptions fmt = make_format_options(opts.seq_length, opts.padding, opts.truncation, opts.answer_only_loss_mask);
  if (opts.limit_dataset_samples && *opts.limit_dataset_samples <= 0)
    throw Error("limit_dataset_samples must be positive", "dataset.limit_dataset_samples", "set a positive count");
  auto source = std::make_shared<const RecordSource>(opts.path, opts.split);
  size_t n = source->size();
  if (opts.limit_dataset_samples) n = std::min(n, size_t(*opts.limit_dataset_samples));
  const bool chat = opts.use_hf_chat_template && tok.has_chat_template();

  Dataset formatted = detail::lazy_dataset(
      source, [tok, fmt, chat, mapping = opts.column_mapping](const ojson& record, const std::string& where) {
        // null -> absent (NeMo's None); a missing column is an error.
        auto field = [&](const std::string& role) -> std::optional<std::string> {
          auto m = mapping.find(role);
          if (m == mapping.end()) return std::nullopt;
          const ojson& v = detail::require_field(record, m->second, where);
          if (v.is_null()) return std::nullopt;
          return detail::text_of(v, m->second, where);
        };
        std::optional<std::string> context = field("context"), question = field("question"), answer = field("answer");
        if (!answer) throw Error("answer column '" + mapping.at("answer") + "' is null", where, "fix the record");
        if (chat) {
          ojson messages = ojson::array({ojson{{"role", "system"}, {"content", context.value_or("")}},
                                         ojson{{"role", "user"}, {"content", question.value_or("")}},
                                         ojson{{"role", "assistant"}, {"content", *answer}}});
          return format_chat(tok, messages, nullptr, fmt);
        }
        // " ".join of the present parts and "": "{context} {question} ".
        std::string prompt;
        for (const auto& part : {context, question})
          if (part) prompt += *part + " ";
        if (prompt.size() <= 1)
          throw Error("the prompt (context + question) is empty", where, "fix the record or the column mapping");
        return format_prompt_completion(tok, prompt, *answer, fmt);
      });
  formatted.size = n;
  formatted = detail::warn_beyond_seq_length(std::move(formatted), fmt, opts.path);
  check_trainable(formatted, "column-mapped", opts.path);
  // NeMo's __getitem__ moves on to the next sample (cyclically) when one has no supervised label; check_trainable
  // guarantees there is one.
  auto next_usable = [inner = formatted.get, n](size_t i) {
    for (size_t j = i;; j = (j + 1) % n) {
      Sample s = inner(j);
      if (s.num_label_tokens() > 0) return s;
    }
  };
  return {n, std::move(next_usable)};
}

}  // namespace automodel::data
