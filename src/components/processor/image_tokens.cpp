#include "components/processor/image_tokens.h"

#include "core/error.h"

namespace automodel::processor {
namespace {

size_t count_of(const std::string& text, const std::string& token) {
  size_t n = 0;
  for (size_t at = text.find(token); at != std::string::npos; at = text.find(token, at + token.size())) ++n;
  return n;
}

}  // namespace

std::string full_image_sequence(const ProcessorConfig& config) {
  std::string s = "\n\n" + config.boi_token;
  s.reserve(s.size() + size_t(config.image_seq_length) * config.image_token.size() + config.eoi_token.size() + 2);
  for (int64_t i = 0; i < config.image_seq_length; ++i) s += config.image_token;
  return s + config.eoi_token + "\n\n";
}

std::string expand_image_placeholders(const std::string& text, const std::vector<int64_t>& num_crops,
                                      const ProcessorConfig& config, const std::string& where) {
  const std::string& placeholder = config.boi_token;
  AM_CHECK(!placeholder.empty(), "the processor's boi_token is empty");
  const size_t placeholders = count_of(text, placeholder);
  if (placeholders != num_crops.size())
    throw Error("the text has " + std::to_string(placeholders) + " image placeholders (" + placeholder + ") but " +
                    std::to_string(num_crops.size()) + " images were given",
                where, "give one image part per image");
  const std::string sequence = full_image_sequence(config);
  std::string out;
  size_t last = 0, image = 0;
  for (size_t at = text.find(placeholder); at != std::string::npos; at = text.find(placeholder, last), ++image) {
    out.append(text, last, at - last);
    if (num_crops[image] == 0) {
      out += sequence;
    } else {
      out += "Here is the original image " + sequence + " and here are some crops to help you see better ";
      for (int64_t c = 0; c < num_crops[image]; ++c) out += (c ? " " : "") + sequence;
    }
    last = at + placeholder.size();
  }
  out.append(text, last, std::string::npos);
  return out;
}

std::vector<int64_t> image_token_types(const std::vector<int64_t>& input_ids, int64_t image_token_id) {
  std::vector<int64_t> types(input_ids.size(), 0);
  for (size_t i = 0; i < input_ids.size(); ++i) types[i] = input_ids[i] == image_token_id ? 1 : 0;
  return types;
}

}  // namespace automodel::processor
