#include "components/data/formatting.h"

#include <algorithm>
#include <map>

#include "core/error.h"

namespace automodel::data {

using ojson = nlohmann::ordered_json;

bool padding_pads_to_max_length(const std::string& padding) {
  if (padding == "max_length") return true;
  if (padding.empty() || padding == "do_not_pad" || padding == "false" || padding == "False" || padding == "longest" ||
      padding == "true" || padding == "True")
    return false;  // "longest" pads in the collater, as NeMo's does
  throw Error("unknown padding '" + padding + "'", "dataset.padding",
              "use do_not_pad (default), max_length (pad every sample to seq_length) or longest");
}

bool truncation_enabled(const std::string& truncation) {
  if (truncation.empty() || truncation == "do_not_truncate" || truncation == "false" || truncation == "False")
    return false;
  if (truncation == "true" || truncation == "True" || truncation == "longest_first" || truncation == "only_first")
    return true;
  throw Error("unknown truncation '" + truncation + "'", "dataset.truncation",
              "use do_not_truncate (default) or longest_first / true (cut samples to seq_length)");
}

FormatOptions make_format_options(std::optional<int64_t> seq_length, const std::string& padding,
                                  const std::string& truncation, bool answer_only_loss_mask) {
  if (seq_length && *seq_length <= 0)
    throw Error("seq_length must be positive, got " + std::to_string(*seq_length), "dataset.seq_length",
                "set a positive seq_length or leave it unset");
  FormatOptions opts;
  opts.seq_length = seq_length;
  opts.pad_to_seq_length = padding_pads_to_max_length(padding);
  opts.truncate = truncation_enabled(truncation);
  opts.answer_only_loss_mask = answer_only_loss_mask;
  return opts;
}

int64_t resolve_pad_id(const TextTokenizer& tok) {
  if (tok.pad_id) return *tok.pad_id;
  return tok.eos_id.value_or(0);
}

Sample package_example(const std::vector<int64_t>& ids, const std::vector<int>& mask, int64_t pad_id,
                       const FormatOptions& opts) {
  Sample s;
  if (ids.size() >= 2) {
    s.input_ids.assign(ids.begin(), ids.end() - 1);
    s.labels.resize(ids.size() - 1);
    for (size_t i = 1; i < ids.size(); ++i) s.labels[i - 1] = (i < mask.size() && mask[i]) ? ids[i] : kIgnoreIndex;
  }
  if (opts.pad_to_seq_length && opts.seq_length && int64_t(s.input_ids.size()) < *opts.seq_length) {
    size_t real = s.input_ids.size(), total = size_t(*opts.seq_length);
    s.input_ids.resize(total, pad_id);
    s.labels.resize(total, kIgnoreIndex);
    s.attention_mask.assign(total, 0);
    std::fill(s.attention_mask.begin(), s.attention_mask.begin() + real, 1);
  }
  return s;
}

namespace {

TokenizedText encode(const TextTokenizer& tok, const std::string& text, bool add_special_tokens) {
  if (!tok.encode) throw Error("the dataset's tokenizer has no encode function", "TextTokenizer.encode");
  TokenizedText t = tok.encode(text, add_special_tokens);
  if (t.offsets.size() != t.ids.size() || t.inserted.size() != t.ids.size())
    throw Error("the dataset's tokenizer gave " + std::to_string(t.offsets.size()) + " offsets and " +
                    std::to_string(t.inserted.size()) + " inserted flags for " + std::to_string(t.ids.size()) + " ids",
                "TextTokenizer.encode");
  return t;
}

// As HF truncation does for one sequence: content tokens are cut so that, with the tokens the post-processor
// inserts around them, the result is max_length long. `mask` is cut alongside.
void truncate(std::vector<int64_t>& ids, std::vector<int>& mask, const std::vector<uint8_t>& inserted, size_t max_len) {
  if (ids.size() <= max_len) return;
  size_t lead = 0, trail = 0;
  while (lead < ids.size() && inserted[lead]) ++lead;
  while (trail < ids.size() - lead && inserted[ids.size() - 1 - trail]) ++trail;
  std::vector<size_t> keep;
  if (lead + trail > max_len) {
    for (size_t i = 0; i < max_len; ++i) keep.push_back(i);
  } else {
    for (size_t i = 0; i < max_len - trail; ++i) keep.push_back(i);
    for (size_t i = ids.size() - trail; i < ids.size(); ++i) keep.push_back(i);
  }
  std::vector<int64_t> kept_ids;
  std::vector<int> kept_mask;
  for (size_t i : keep) {
    kept_ids.push_back(ids[i]);
    kept_mask.push_back(mask[i]);
  }
  ids = std::move(kept_ids);
  mask = std::move(kept_mask);
}

}  // namespace

std::vector<int> completion_mask(const TokenizedText& t, size_t prompt_bytes) {
  std::vector<int> mask(t.ids.size(), 0);
  bool after_content = false;
  for (size_t i = 0; i < t.ids.size(); ++i) {
    if (t.inserted[i]) {
      mask[i] = after_content;
    } else {
      mask[i] = t.offsets[i].second > prompt_bytes;
      after_content = true;
    }
  }
  return mask;
}

Sample format_prompt_completion(const TextTokenizer& tok, const std::string& prompt, const std::string& answer,
                                const FormatOptions& opts) {
  const TokenizedText t = encode(tok, prompt + answer, true);
  std::vector<int64_t> ids = t.ids;
  std::vector<int> mask =
      opts.answer_only_loss_mask ? completion_mask(t, prompt.size()) : std::vector<int>(ids.size(), 1);
  if (opts.truncate && opts.seq_length) truncate(ids, mask, t.inserted, size_t(*opts.seq_length));
  return package_example(ids, mask, resolve_pad_id(tok), opts);
}

namespace {

std::vector<int64_t> render_ids(const TextTokenizer& tok, const ojson& messages, const ojson& tools) {
  return encode(tok, tok.apply_chat_template(messages, tools, false), false).ids;
}

bool is_render_prefix(const std::vector<int64_t>& prefix, const std::vector<int64_t>& full,
                      std::optional<int64_t> trailing) {
  if (prefix.size() > full.size()) return false;
  if (std::equal(prefix.begin(), prefix.end(), full.begin())) return true;
  // A prefix render may end with a standalone terminator (EOS) that the next message replaces.
  return prefix.size() > 1 && trailing && prefix.back() == *trailing &&
         std::equal(prefix.begin(), prefix.end() - 1, full.begin());
}

void keep_last_run(std::vector<int>& mask) {
  auto last = std::find_if(mask.rbegin(), mask.rend(), [](int m) { return m != 0; });
  if (last == mask.rend()) return;
  size_t end = size_t(mask.rend() - last);  // one past the last supervised position
  size_t start = end - 1;
  while (start > 0 && mask[start - 1] != 0) --start;
  std::fill(mask.begin(), mask.begin() + start, 0);
}

}  // namespace

Sample format_chat(const TextTokenizer& tok, const ojson& messages, const ojson& tools, const FormatOptions& opts) {
  if (!tok.has_chat_template())
    throw Error("the tokenizer has no chat template", "tokenizer",
                "use a tokenizer whose tokenizer_config.json has a chat_template, or set dataset.chat_template");
  if (!messages.is_array()) throw Error("messages must be a list", "messages");
  const std::vector<int64_t> full = render_ids(tok, messages, tools);
  std::vector<int64_t> ids = full;
  if (opts.truncate && opts.seq_length && int64_t(ids.size()) > *opts.seq_length) ids.resize(size_t(*opts.seq_length));

  std::vector<int> mask(ids.size(), 1);
  if (opts.answer_only_loss_mask) {
    std::fill(mask.begin(), mask.end(), 0);
    std::map<size_t, size_t> prefix_len = {{messages.size(), full.size()}};
    auto length_of = [&](size_t k) {
      auto it = prefix_len.find(k);
      if (it != prefix_len.end()) return it->second;
      ojson prefix = ojson::array();
      for (size_t i = 0; i < k; ++i) prefix.push_back(messages[i]);
      std::vector<int64_t> prefix_ids = render_ids(tok, prefix, tools);
      if (!is_render_prefix(prefix_ids, full, tok.eos_id))
        throw Error("cannot build the answer-only loss mask: rendering the first " + std::to_string(k) +
                        " message(s) alone is not a prefix of the rendered conversation",
                    "chat template",
                    "the template rewrites earlier turns from later ones (e.g. drops <think> blocks); use a "
                    "template that renders earlier turns unchanged, or set answer_only_loss_mask: false");
      prefix_len[k] = prefix_ids.size();
      return prefix_ids.size();
    };
    bool found_assistant = false;
    for (size_t k = 0; k < messages.size(); ++k) {
      if (messages[k].value("role", std::string()) != "assistant") continue;
      found_assistant = true;
      size_t start = std::min(length_of(k), mask.size()), end = std::min(length_of(k + 1), mask.size());
      for (size_t p = start; p < end; ++p) mask[p] = 1;
    }
    if (!found_assistant)
      throw Error("conversation has no assistant message", "messages",
                  "add an assistant turn (the loss is taken on assistant turns only) or set answer_only_loss_mask: "
                  "false");
  }
  if (opts.train_on_last_turn_only) keep_last_run(mask);
  return package_example(ids, mask, resolve_pad_id(tok), opts);
}

namespace {

void dump_python(const ojson& v, std::string& out) {
  switch (v.type()) {
    case ojson::value_t::object: {
      out += '{';
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out += ", ";
        first = false;
        out += ojson(it.key()).dump(-1, ' ', true);
        out += ": ";
        dump_python(it.value(), out);
      }
      out += '}';
      break;
    }
    case ojson::value_t::array: {
      out += '[';
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += ", ";
        dump_python(v[i], out);
      }
      out += ']';
      break;
    }
    default: out += v.dump(-1, ' ', true);
  }
}

}  // namespace

std::string python_json_dumps(const ojson& value) {
  std::string out;
  dump_python(value, out);
  return out;
}

}  // namespace automodel::data
