#pragma once
// Model inputs of a vision-language model from text and images, as transformers' processor makes them: the
// Gemma 3 processor's processor(text=..., images=...) and processor.apply_chat_template(messages, tokenize=True,
// return_dict=True) with image parts naming files.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "components/processor/image_processor.h"
#include "components/tokenizer/chat_template.h"
#include "components/tokenizer/tokenizer.h"
#include "io/image.h"

namespace automodel::recipes {

struct VlmInputs {
  std::string text;                     // the prompt with every image placeholder expanded
  std::vector<int64_t> input_ids;       // its tokens
  std::vector<int64_t> token_type_ids;  // 1 at image tokens
  processor::PixelValues pixels;        // [images + crops, 3, H, W]
};

// processor(text=text, images=images): the images are preprocessed, the text's placeholders expanded, and the result
// tokenized (with the tokenizer's special tokens when add_special_tokens). `where` names the input in errors.
VlmInputs process_text_and_images(const tokenizer::Tokenizer& tokenizer, const processor::ProcessorConfig& config,
                                  const std::string& text, const std::vector<io::ImageRGB8>& images,
                                  bool add_special_tokens, const std::string& where);

// The image files of a conversation's {"type": "image"} content parts, in order, from the first of their "image",
// "url" or "path" keys (as transformers collects them); relative paths are taken from `base_dir` ("" for the working
// directory). Web URLs and inline base64 images are Errors (nothing is downloaded). `where` names the conversation.
std::vector<std::string> conversation_image_files(const nlohmann::ordered_json& messages, const std::string& base_dir,
                                                  const std::string& where);

// processor.apply_chat_template(messages, tokenize=True, return_dict=True): the rendered conversation with its images
// decoded from their files. The tokenizer's special tokens are added unless the rendered text already starts with the
// BOS token, as transformers decides.
VlmInputs apply_chat_template_with_images(const tokenizer::Tokenizer& tokenizer,
                                          const tokenizer::ChatTemplates& templates,
                                          const processor::ProcessorConfig& config,
                                          const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                          const std::string& base_dir, const std::string& where);

}  // namespace automodel::recipes
