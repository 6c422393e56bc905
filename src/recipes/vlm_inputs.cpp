#include "recipes/vlm_inputs.h"

#include <filesystem>

#include "components/processor/idefics3_image_processor.h"
#include "components/processor/image_tokens.h"
#include "core/error.h"

namespace automodel::recipes {

VlmInputs process_text_and_images(const tokenizer::Tokenizer& tokenizer, const processor::ProcessorConfig& config,
                                  const std::string& text, const std::vector<io::ImageRGB8>& images,
                                  bool add_special_tokens, const std::string& where) {
  const std::optional<int64_t> image_token_id = tokenizer.token_to_id(config.image_token);
  if (!image_token_id)
    throw Error("the tokenizer has no image token " + config.image_token, where,
                "use the tokenizer saved with the model's processor");
  VlmInputs out;
  out.pixels = processor::preprocess_images(images, config.image);
  out.text = config.image.splitting.idefics3
                 ? processor::expand_idefics3_placeholders(text, out.pixels, config, where)
                 : processor::expand_image_placeholders(text, out.pixels.num_crops, config, where);
  out.input_ids = tokenizer.encode(out.text, add_special_tokens).ids;
  out.token_type_ids = processor::image_token_types(out.input_ids, *image_token_id);
  return out;
}

std::vector<std::string> conversation_image_files(const nlohmann::ordered_json& messages, const std::string& base_dir,
                                                  const std::string& where) {
  if (!messages.is_array()) throw Error("expected a JSON array of messages", where);
  std::vector<std::string> files;
  for (size_t m = 0; m < messages.size(); ++m) {
    const auto& message = messages[m];
    if (!message.is_object() || !message.contains("content") || !message["content"].is_array()) continue;
    const auto& content = message["content"];
    for (size_t p = 0; p < content.size(); ++p) {
      const auto& part = content[p];
      if (!part.is_object() || part.value("type", "") != "image") continue;
      const std::string at = where + ": messages[" + std::to_string(m) + "].content[" + std::to_string(p) + "]";
      const nlohmann::ordered_json* source = nullptr;
      for (const char* key : {"image", "url", "path"})
        if (!source && part.contains(key)) source = &part[key];
      if (!source) {
        if (part.contains("base64"))
          throw Error("inline base64 images are not supported", at, "save the image to a file and give its \"path\"");
        throw Error("an image part without an \"image\", \"url\" or \"path\"", at);
      }
      if (!source->is_string()) throw Error("expected a file path, got " + source->dump(), at);
      std::string path = source->get<std::string>();
      if (path.starts_with("http://") || path.starts_with("https://"))
        throw Error("web URLs are not downloaded: " + path, at, "download the image and give its local path");
      if (path.starts_with("data:"))
        throw Error("inline (data: URL) images are not supported", at, "save the image to a file and give its path");
      if (path.starts_with("file://")) path = path.substr(7);
      std::filesystem::path file(path);
      if (file.is_relative() && !base_dir.empty()) file = std::filesystem::path(base_dir) / file;
      files.push_back(file.string());
    }
  }
  return files;
}

VlmInputs apply_chat_template_with_images(const tokenizer::Tokenizer& tokenizer,
                                          const tokenizer::ChatTemplates& templates,
                                          const processor::ProcessorConfig& config,
                                          const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                          const std::string& base_dir, const std::string& where) {
  std::vector<io::ImageRGB8> images;
  for (const std::string& file : conversation_image_files(messages, base_dir, where))
    images.push_back(io::read_image_file(file));
  const std::string text = tokenizer::apply_chat_template(templates, messages, add_generation_prompt);
  const bool starts_with_bos = tokenizer.bos_token() && text.starts_with(*tokenizer.bos_token());
  return process_text_and_images(tokenizer, config, text, images, !starts_with_bos, where);
}

}  // namespace automodel::recipes
