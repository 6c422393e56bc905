// Helpers shared by the datasets, plus SQuAD and HellaSwag.
#include "components/data/llm_datasets.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>

#include "components/data/formatting.h"
#include "components/data/record_fields.h"
#include "components/data/records.h"
#include "core/error.h"

namespace automodel::data {

using ojson = nlohmann::ordered_json;

std::string limit_split(const std::string& split, std::optional<int64_t> limit, const std::string& key) {
  if (!limit) return split;
  if (*limit <= 0)
    throw Error(key + " must be positive, got " + std::to_string(*limit), key,
                "set a positive count or leave it unset");
  if (split.find('[') != std::string::npos) return split;  // NeMo: the split's own slice wins
  return split + "[:" + std::to_string(*limit) + "]";
}

void check_trainable(const Dataset& data, const std::string& dataset, const std::string& path) {
  if (data.size == 0)
    throw Error(dataset + " dataset is empty", path, "check the split (and its slice) and the file's contents");
  for (size_t i = 0; i < data.size; ++i)
    if (data.get(i).num_label_tokens() > 0) return;
  throw Error("every sample of the " + dataset + " dataset has all labels masked (-100): nothing to train on", path,
              "check the column mapping and that answers are not empty or cut off by seq_length/truncation");
}

std::vector<Sample> materialize(const Dataset& data) {
  std::vector<Sample> out;
  out.reserve(data.size);
  for (size_t i = 0; i < data.size; ++i) out.push_back(data.get(i));
  return out;
}

Dataset dataset_of(std::vector<Sample> samples) {
  auto shared = std::make_shared<const std::vector<Sample>>(std::move(samples));
  return {shared->size(), [shared](size_t i) { return shared->at(i); }};
}

Dataset warn_on_long_samples(Dataset data, size_t max_inputs, std::string what, std::string limit_name,
                             std::string consequence) {
  auto warned = std::make_shared<std::atomic<bool>>(false);
  auto get = [inner = std::move(data.get), max_inputs, what = std::move(what), limit_name = std::move(limit_name),
              consequence = std::move(consequence), warned](size_t i) {
    Sample s = inner(i);
    if (s.input_ids.size() > max_inputs && !warned->exchange(true))
      std::fprintf(stderr,
                   "warning: %s: sample %zu has %zu input tokens, more than %s (%zu); %s (further samples "
                   "are not reported)\n",
                   what.c_str(), i, s.input_ids.size(), limit_name.c_str(), max_inputs, consequence.c_str());
    return s;
  };
  return {data.size, std::move(get)};
}

namespace detail {

// NeMo keeps samples longer than seq_length whole when truncation is off (HF tokenizers only warn); so do we, and
// say so once.
Dataset warn_beyond_seq_length(Dataset data, const FormatOptions& fmt, const std::string& path) {
  if (!fmt.seq_length || fmt.truncate) return data;
  return warn_on_long_samples(std::move(data), size_t(*fmt.seq_length - 1), path, "dataset.seq_length minus one",
                              "truncation is off, so it is kept whole (set dataset.truncation: longest_first to cut "
                              "samples to seq_length)");
}

}  // namespace detail

namespace detail {

const ojson& require_field(const ojson& record, const std::string& column, const std::string& where) {
  auto it = record.find(column);
  if (it == record.end()) {
    std::string have;
    for (auto f = record.begin(); f != record.end(); ++f) have += (have.empty() ? "" : ", ") + f.key();
    throw Error("record has no column '" + column + "' (it has: " + (have.empty() ? "nothing" : have) + ")", where,
                "fix the data or the column mapping");
  }
  return *it;
}

// Python str() of a scalar JSON value.
std::string text_of(const ojson& v, const std::string& column, const std::string& where) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_number()) return v.dump();
  throw Error("column '" + column + "' holds a JSON " + std::string(v.type_name()) + ", not text", where,
              "map the column to a text field");
}

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

}  // namespace detail

using detail::require_field;
using detail::text_of;

namespace {

std::string squad_answer(const ojson& record, const std::string& where) {
  const ojson& answers = require_field(record, "answers", where);
  const ojson* texts = nullptr;
  if (answers.is_object() && answers.contains("text")) texts = &answers["text"];
  if (answers.is_array()) texts = &answers;  // SQuAD v1 file layout: [{"text": ...}, ...]
  if (!texts || !texts->is_array())
    throw Error("'answers' must be {\"text\": [...]} (HF SQuAD layout)", where, "fix the record");
  if (texts->empty()) return "";
  const ojson& first = (*texts)[0];
  if (first.is_object()) return detail::strip(text_of(require_field(first, "text", where), "answers.text", where));
  return detail::strip(text_of(first, "answers.text", where));
}

}  // namespace

Dataset make_squad_dataset(const TextTokenizer& tok, const SquadOptions& opts) {
  FormatOptions fmt = make_format_options(opts.seq_length, opts.padding, opts.truncation, true);
  std::string split = limit_split(opts.split, opts.limit_dataset_samples, "dataset.limit_dataset_samples");
  auto source = std::make_shared<const RecordSource>(opts.path, split);
  bool chat = opts.use_chat_template.value_or(tok.has_chat_template());
  if (chat && !tok.has_chat_template())
    throw Error("use_chat_template is set but the tokenizer has no chat template", "dataset.use_chat_template",
                "unset it (plain prompts) or use a tokenizer with a chat_template");
  Dataset data = detail::lazy_dataset(source, [tok, fmt, chat](const ojson& r, const std::string& where) {
    std::string context = text_of(require_field(r, "context", where), "context", where);
    std::string question = text_of(require_field(r, "question", where), "question", where);
    std::string answer = squad_answer(r, where);
    std::string prompt = "Context: " + context + " Question: " + question + " Answer: ";
    if (!chat) return format_prompt_completion(tok, prompt, answer, fmt);
    ojson messages =
        ojson::array({ojson{{"role", "user"}, {"content", prompt}}, ojson{{"role", "assistant"}, {"content", answer}}});
    return format_chat(tok, messages, nullptr, fmt);
  });
  data = detail::warn_beyond_seq_length(std::move(data), fmt, opts.path);
  check_trainable(data, "SQuAD", opts.path);
  return data;
}

Dataset make_hellaswag_dataset(const TextTokenizer& tok, const HellaSwagOptions& opts) {
  if (!tok.encode) throw Error("the dataset's tokenizer has no encode function", "TextTokenizer.encode");
  std::string split = opts.split;
  if (opts.num_samples_limit) {
    if (*opts.num_samples_limit <= 0)
      throw Error("num_samples_limit must be positive", "dataset.num_samples_limit", "set a positive count");
    if (split.find('[') != std::string::npos)
      throw Error("split '" + split + "' already has a slice; num_samples_limit would add a second one",
                  "dataset.num_samples_limit", "use one of the two");
    split += "[:" + std::to_string(*opts.num_samples_limit) + "]";
  }
  const RecordSource records(opts.path, split);
  auto is_special = [&](int64_t id) {
    return (tok.bos_id && id == *tok.bos_id) || (tok.eos_id && id == *tok.eos_id) || (tok.pad_id && id == *tok.pad_id);
  };
  std::vector<Sample> samples;
  samples.reserve(records.size());
  size_t longest = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const std::string where = records.where(i);
    const ojson r = records.at(i);
    std::string ctx = text_of(require_field(r, "ctx", where), "ctx", where);
    const ojson& endings = require_field(r, "endings", where);
    const ojson& label_v = require_field(r, "label", where);
    int64_t label = -1;
    if (label_v.is_number_integer()) label = label_v.get<int64_t>();
    if (label_v.is_string()) {
      try {
        label = std::stoll(label_v.get<std::string>());
      } catch (const std::exception&) {
      }
    }
    if (!endings.is_array() || label < 0 || label >= int64_t(endings.size()))
      throw Error("'label' must index 'endings' (got label " + label_v.dump() + " for " +
                      std::to_string(endings.is_array() ? endings.size() : 0) + " endings)",
                  where, "fix the record");
    std::string target = text_of(endings[size_t(label)], "endings", where);
    std::vector<int64_t> ctx_ids = tok.encode(ctx, true).ids, tgt_ids = tok.encode(target, true).ids;
    if (!ctx_ids.empty() && is_special(ctx_ids.back())) ctx_ids.pop_back();
    if (!tgt_ids.empty() && is_special(tgt_ids.front())) tgt_ids.erase(tgt_ids.begin());
    if (ctx_ids.empty()) throw Error("'ctx' tokenizes to nothing", where, "drop the record or give it a context");
    Sample s;
    s.input_ids = ctx_ids;
    s.input_ids.insert(s.input_ids.end(), tgt_ids.begin(), tgt_ids.end());
    // Already shifted: position len(ctx)-1 predicts the ending's first token; the last predicts nothing.
    s.labels.assign(ctx_ids.size() - 1, kIgnoreIndex);
    s.labels.insert(s.labels.end(), tgt_ids.begin(), tgt_ids.end());
    s.labels.push_back(kIgnoreIndex);
    longest = std::max(longest, s.input_ids.size());
    samples.push_back(std::move(s));
  }
  if (opts.pad_to_max_length && !samples.empty()) {
    size_t max_len = (longest + 7) / 8 * 8;
    int64_t pad = tok.pad_id.value_or(0);
    for (Sample& s : samples) {
      size_t real = s.input_ids.size();
      s.input_ids.resize(max_len, pad);
      s.labels.resize(max_len, kIgnoreIndex);
      s.attention_mask.assign(max_len, 0);
      std::fill(s.attention_mask.begin(), s.attention_mask.begin() + real, 1);
    }
  }
  Dataset data = dataset_of(std::move(samples));
  check_trainable(data, "HellaSwag", opts.path);
  return data;
}

}  // namespace automodel::data
