#include "recipes/vlm_collate.h"

#include <algorithm>
#include <filesystem>

#include "components/data/record_fields.h"
#include "core/error.h"
#include "io/hf_dir.h"
#include "recipes/vlm_inputs.h"

namespace automodel::recipes {

using ojson = nlohmann::ordered_json;

namespace {

int64_t required_token(const tokenizer::Tokenizer& tok, const std::string& token, const std::string& dir) {
  const std::optional<int64_t> id = tok.token_to_id(token);
  if (!id)
    throw Error("the tokenizer has no token " + token, dir, "use the tokenizer saved with the model's processor");
  return *id;
}

// tokenizer_config.json's padding_side; without one, the tokenizer class's default (Gemma's classes pad on the left,
// PreTrainedTokenizerBase on the right).
bool pads_left(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "tokenizer_config.json").string();
  if (!std::filesystem::exists(path)) return false;
  const nlohmann::json config = io::read_json_file(path);
  if (config.contains("padding_side") && config["padding_side"].is_string()) {
    const std::string side = config["padding_side"];
    if (side != "left" && side != "right")
      throw Error("padding_side must be \"left\" or \"right\", got \"" + side + "\"", path + ": padding_side");
    return side == "left";
  }
  const std::string cls = config.value("tokenizer_class", "");
  return cls == "GemmaTokenizer" || cls == "GemmaTokenizerFast";
}

// NeMo's _derive_turn_markers: the assistant marker is what the template puts between the end of a user turn and
// a sentinel answer, the end-of-turn token the first one after the sentinel.
void derive_turn_markers(VlmProcessor& p, const std::string& dir) {
  const std::string sentinel = "XSENTINELMARKERX";
  const ojson user = ojson{{"role", "user"}, {"content", "u"}};
  const ojson with_answer = ojson::array({user, ojson{{"role", "assistant"}, {"content", sentinel}}});
  const std::vector<int64_t> all =
      p.tokenizer->encode(tokenizer::apply_chat_template(p.templates, with_answer, false), false).ids;
  const std::vector<int64_t> user_only =
      p.tokenizer->encode(tokenizer::apply_chat_template(p.templates, ojson::array({user}), false), false).ids;
  const std::vector<int64_t> answer = p.tokenizer->encode(sentinel, false).ids;
  const auto at = std::search(all.begin(), all.end(), answer.begin(), answer.end());
  const size_t start = size_t(at - all.begin());
  if (at == all.end() || answer.empty() || start + answer.size() >= all.size() || start <= user_only.size())
    throw Error("cannot find the assistant turn's markers in the chat template's output", dir,
                "the collate needs a chat template that wraps assistant turns in fixed tokens (as Gemma 3's does)");
  p.assistant_marker.assign(all.begin() + int64_t(user_only.size()), at);
  // A space before the answer is one token here ("Assistant: " + "X..."), but a BPE merges it into a real answer's
  // first word ("ĠThe"): the marker ends before it (SmolVLM's "Assistant:"; Gemma 3's "model\n" keeps its newline).
  auto is_space = [&](int64_t id) {
    const std::string text = p.tokenizer->decode({id});
    return std::all_of(text.begin(), text.end(), [](char ch) { return ch == ' '; });
  };
  while (p.assistant_marker.size() > 1 && is_space(p.assistant_marker.back())) p.assistant_marker.pop_back();
  p.end_of_turn_id = all[start + answer.size()];
}

// Labels of one unpadded sequence: each assistant turn's tokens after the marker through the end-of-turn token (NeMo's
// _build_labels_from_markers), then image tokens and the image delimiters masked: NeMo would label an image in an
// assistant message, whose tokens the model cannot predict.
std::vector<int64_t> assistant_labels(const std::vector<int64_t>& ids, const VlmProcessor& p) {
  std::vector<int64_t> labels(ids.size(), data::kIgnoreIndex);
  const std::vector<int64_t>& marker = p.assistant_marker;
  size_t i = 0;
  while (i + marker.size() <= ids.size()) {
    if (!std::equal(marker.begin(), marker.end(), ids.begin() + int64_t(i))) {
      ++i;
      continue;
    }
    size_t end = i + marker.size();
    while (end < ids.size() && ids[end] != p.end_of_turn_id) ++end;
    if (end < ids.size()) ++end;  // the end-of-turn token is learned too
    for (size_t t = i + marker.size(); t < end; ++t)
      if (ids[t] != p.image_token_id && ids[t] != p.boi_id && ids[t] != p.eoi_id) labels[t] = ids[t];
    i = end;
  }
  return labels;
}

}  // namespace

VlmProcessor load_vlm_processor(const std::string& model_dir) {
  VlmProcessor p;
  p.tokenizer = std::make_shared<const tokenizer::Tokenizer>(tokenizer::Tokenizer::from_pretrained(model_dir));
  p.templates = tokenizer::load_chat_templates(model_dir);
  p.config = processor::load_processor_config(model_dir);
  if (!p.tokenizer->pad_token())
    throw Error("the tokenizer has no pad token: a batch of conversations cannot be padded", model_dir,
                "set pad_token in tokenizer_config.json");
  p.pad_id = required_token(*p.tokenizer, *p.tokenizer->pad_token(), model_dir);
  p.pad_left = pads_left(model_dir);
  p.image_token_id = required_token(*p.tokenizer, p.config.image_token, model_dir);
  p.boi_id = required_token(*p.tokenizer, p.config.boi_token, model_dir);
  p.eoi_id = required_token(*p.tokenizer, p.config.eoi_token, model_dir);
  derive_turn_markers(p, model_dir);
  return p;
}

data::Batch vlm_collate(const std::vector<const data::Conversation*>& conversations, const VlmProcessor& p,
                        const VlmCollateOptions& options) {
  if (conversations.empty()) throw Error("cannot collate an empty batch", "vlm_collate");
  std::vector<VlmInputs> inputs;
  std::vector<std::vector<int64_t>> labels;
  size_t longest = 0;
  for (const data::Conversation* c : conversations) {
    inputs.push_back(data::detail::at_record(c->where, [&] {
      return apply_chat_template_with_images(*p.tokenizer, p.templates, p.config, c->messages, false, "", c->where);
    }));
    labels.push_back(assistant_labels(inputs.back().input_ids, p));
    if (std::none_of(labels.back().begin() + 1, labels.back().end(), [](int64_t l) { return l != data::kIgnoreIndex; }))
      throw Error("no assistant answer tokens found in the tokenized conversation", c->where,
                  "check that the chat template renders the assistant turn");
    longest = std::max(longest, inputs.back().input_ids.size());
  }
  size_t L = longest;
  if (options.max_length) {
    if (*options.max_length < 2)
      throw Error("max_length must be at least 2, got " + std::to_string(*options.max_length), "collate_fn.max_length");
    for (size_t b = 0; b < inputs.size(); ++b)
      if (inputs[b].input_ids.size() > size_t(*options.max_length))
        throw Error("the conversation has " + std::to_string(inputs[b].input_ids.size()) +
                        " tokens, more than collate_fn.max_length " + std::to_string(*options.max_length),
                    conversations[b]->where, "raise max_length or shorten the conversation");
    L = size_t(*options.max_length);
  }
  if (L < 2) throw Error("a conversation of fewer than 2 tokens has nothing to predict", conversations[0]->where);
  const size_t B = conversations.size(), T = L - 1;
  std::vector<int64_t> ids(B * T, p.pad_id), mask(B * T, 0), types(B * T, 0), targets(B * T, data::kIgnoreIndex);
  std::vector<float> pixels;
  int64_t images = 0, height = p.config.image.height, width = p.config.image.width;
  data::Batch batch;
  for (size_t b = 0; b < B; ++b) {
    const VlmInputs& in = inputs[b];
    const size_t n = in.input_ids.size(), offset = p.pad_left ? L - n : 0;
    // Padded position j holds token j - offset; the inputs are positions 0..L-2, the labels positions 1..L-1.
    for (size_t j = offset; j < offset + n; ++j) {
      const size_t k = j - offset;
      if (j < T) {
        ids[b * T + j] = in.input_ids[k];
        mask[b * T + j] = 1;
        types[b * T + j] = in.token_type_ids[k];
      }
      if (j >= 1) targets[b * T + j - 1] = labels[b][k];
    }
    if (in.pixels.count > 0) {
      height = in.pixels.height;
      width = in.pixels.width;
      pixels.insert(pixels.end(), in.pixels.values.begin(), in.pixels.values.end());
      images += in.pixels.count;
    }
  }
  for (int64_t l : targets) batch.num_label_tokens += l != data::kIgnoreIndex;
  const int64_t rows = int64_t(B), cols = int64_t(T);
  batch.input_ids = Tensor::from_vector(ids, {rows, cols});
  batch.attention_mask = Tensor::from_vector(mask, {rows, cols});
  batch.labels = Tensor::from_vector(targets, {rows, cols});
  // Idefics 3 / SmolVLM's processor makes no token_type_ids: its decoder is causal over image tokens too.
  if (!p.config.image.splitting.idefics3) batch.token_type_ids = Tensor::from_vector(types, {rows, cols});
  if (images > 0) batch.pixel_values = Tensor::from_vector(pixels, {images, 3, height, width});
  return batch;
}

}  // namespace automodel::recipes
