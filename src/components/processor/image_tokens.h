#pragma once
// The text side of Gemma3Processor: each image placeholder (boi_token, "<start_of_image>", as the chat template
// writes it per image part) becomes the image's token sequence, and token_type_ids mark the image tokens.
#include <cstdint>
#include <string>
#include <vector>

#include "components/processor/image_processor.h"

namespace automodel::processor {

// "\n\n" + boi + image_seq_length x image_token + eoi + "\n\n" (Gemma3Processor.full_image_sequence).
std::string full_image_sequence(const ProcessorConfig& config);

// Replaces the i-th boi_token of `text` with image i's sequence: the full sequence, or with pan-and-scan crops
// "Here is the original image <seq> and here are some crops to help you see better <seq> <seq> ..." (one per crop),
// as Gemma3Processor.replace_image_token. The number of placeholders must equal num_crops.size() (Error naming
// `where` otherwise, as transformers raises).
std::string expand_image_placeholders(const std::string& text, const std::vector<int64_t>& num_crops,
                                      const ProcessorConfig& config, const std::string& where);

// token_type_ids of transformers' Gemma 3 processor: 1 at every image_token id, 0 elsewhere.
std::vector<int64_t> image_token_types(const std::vector<int64_t>& input_ids, int64_t image_token_id);

}  // namespace automodel::processor
