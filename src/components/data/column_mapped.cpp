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

std::vector<Sample> make_column_mapped_dataset(const TextTokenizer& tok, const ColumnMappedOptions& opts) {
  check_column_mapping(opts.column_mapping);
  FormatOptions fmt = make_format_options(opts.seq_length, opts.padding, opts.truncation, opts.answer_only_loss_mask);
  if (opts.limit_dataset_samples && *opts.limit_dataset_samples <= 0)
    throw Error("limit_dataset_samples must be positive", "dataset.limit_dataset_samples", "set a positive count");
  std::vector<ojson> records = load_records(opts.path, opts.split);
  if (opts.limit_dataset_samples && size_t(*opts.limit_dataset_samples) < records.size())
    records.resize(size_t(*opts.limit_dataset_samples));
  const bool chat = opts.use_hf_chat_template && tok.has_chat_template();

  std::vector<Sample> samples;
  samples.reserve(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    std::string where = detail::record_where(opts.path, i);
    // null -> absent (NeMo's None); a missing column is an error.
    auto field = [&](const std::string& role) -> std::optional<std::string> {
      auto m = opts.column_mapping.find(role);
      if (m == opts.column_mapping.end()) return std::nullopt;
      const ojson& v = detail::require_field(records[i], m->second, where);
      if (v.is_null()) return std::nullopt;
      return detail::text_of(v, m->second, where);
    };
    std::optional<std::string> context = field("context"), question = field("question"), answer = field("answer");
    if (!answer)
      throw Error("answer column '" + opts.column_mapping.at("answer") + "' is null", where, "fix the record");
    if (chat) {
      ojson messages = ojson::array({ojson{{"role", "system"}, {"content", context.value_or("")}},
                                     ojson{{"role", "user"}, {"content", question.value_or("")}},
                                     ojson{{"role", "assistant"}, {"content", *answer}}});
      samples.push_back(detail::at_record(where, [&] { return format_chat(tok, messages, nullptr, fmt); }));
    } else {
      // " ".join of the present parts and "": "{context} {question} ".
      std::string prompt;
      for (const auto& part : {context, question})
        if (part) prompt += *part + " ";
      if (prompt.size() <= 1)
        throw Error("the prompt (context + question) is empty", where, "fix the record or the column mapping");
      samples.push_back(format_prompt_completion(tok, prompt, *answer, fmt));
    }
  }
  check_trainable(samples, "column-mapped", opts.path);
  // NeMo's __getitem__ moves on to the next sample (cyclically) when one has no supervised label.
  const size_t n = samples.size();
  std::vector<Sample> out(n);
  for (size_t i = 0; i < n; ++i) {
    size_t j = i;
    while (samples[j].num_label_tokens() == 0) j = (j + 1) % n;
    out[i] = samples[j];
  }
  return out;
}

}  // namespace automodel::data
