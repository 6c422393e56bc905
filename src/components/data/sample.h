#pragma once
// The data component's vocabulary: one tokenized training example (labels already shifted for
// next-token prediction) and the tokenizer seam through which the recipe wires a real tokenizer in.
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace automodel::data {

// Label value that takes no part in the loss (torch's CrossEntropyLoss ignore_index).
inline constexpr int64_t kIgnoreIndex = -100;

struct Sample {
  // labels[i] is the target for position i, i.e. the token that follows input_ids[i] (NeMo shifts
  // once, in the dataset): input_ids = tokens[:-1], labels = masked(tokens[1:]). kIgnoreIndex = no loss.
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;
  // Packed samples only (empty otherwise): the position inside its own sequence (restarts at 0 per
  // sequence) and which sequence of the pack each token belongs to (0, 1, 2, ...; pack padding is -1).
  std::vector<int64_t> position_ids;
  std::vector<int64_t> seq_ids;
  // 1 for a real token, 0 for padding added inside the dataset (padding="max_length", HellaSwag's
  // pad_to_max_length, pack padding). Empty means every position is real.
  std::vector<int64_t> attention_mask;

  bool packed() const { return !position_ids.empty(); }
  int64_t num_label_tokens() const;  // labels != kIgnoreIndex
};

// A text's tokens as the `tokenizers` package's Encoding gives them: ids, the byte span of `text` each token
// covers, and which tokens the post-processor inserted (BOS, EOS, ...: their spans are empty).
// A map-style dataset: `size` samples, each made when asked for (records are read and tokenized on demand, so a
// dataset of any size starts at once and holds no more than the samples in use). get is thread-safe.
struct Dataset {
  size_t size = 0;
  std::function<Sample(size_t index)> get;
};

struct TokenizedText {
  std::vector<int64_t> ids;
  std::vector<std::pair<size_t, size_t>> offsets;
  std::vector<uint8_t> inserted;
};

struct TextTokenizer {
  // The tokens of `text`; add_special_tokens adds what the tokenizer's post-processor adds (BOS, ...).
  std::function<TokenizedText(const std::string& text, bool add_special_tokens)> encode;
  // Renders OpenAI-style messages (and tools, may be null) with the tokenizer's chat template.
  // Left empty (no target) when the tokenizer has no chat template.
  std::function<std::string(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                            bool add_generation_prompt)>
      apply_chat_template;
  std::optional<int64_t> bos_id, eos_id, pad_id;

  bool has_chat_template() const { return static_cast<bool>(apply_chat_template); }
};

}  // namespace automodel::data
