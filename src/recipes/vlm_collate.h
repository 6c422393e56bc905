#pragma once
// NeMo Automodel's VLM collate (collate_fns.default_collate_fn, which Gemma 3 uses): conversations rendered and
// tokenized by the processor (apply_chat_template_with_images), padded to the batch's longest, labels on the
// assistant turns found by the chat template's own turn markers, then shifted for next-token prediction.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "components/data/collate.h"
#include "components/data/vlm_datasets.h"
#include "components/processor/image_processor.h"
#include "components/tokenizer/chat_template.h"
#include "components/tokenizer/tokenizer.h"

namespace automodel::recipes {

// What the collate needs of a model directory's processor.
struct VlmProcessor {
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer;
  tokenizer::ChatTemplates templates;
  processor::ProcessorConfig config;
  int64_t pad_id = 0;
  bool pad_left = false;  // the tokenizer's padding_side
  int64_t image_token_id = 0, boi_id = 0, eoi_id = 0;
  // The tokens that open an assistant turn (Gemma 3: <start_of_turn>model\n) and the one that closes it
  // (<end_of_turn>), found as NeMo's _derive_turn_markers does: from a rendered conversation with a sentinel answer.
  std::vector<int64_t> assistant_marker;
  int64_t end_of_turn_id = 0;
};

// Reads the processor of a model directory: tokenizer, chat template, processor config, the pad token and padding
// side (tokenizer_config.json's padding_side; Gemma's tokenizer classes pad on the left by default). Error naming the
// directory when it has no pad token, no image tokens or a chat template whose turn markers cannot be found.
VlmProcessor load_vlm_processor(const std::string& model_dir);

struct VlmCollateOptions {
  // NeMo's collate_fn max_length: pad every batch to this length. A longer conversation is an Error (cutting it would
  // cut image tokens or the answer); unset pads to the batch's longest.
  std::optional<int64_t> max_length;
};

// The batch of these conversations: input_ids, attention_mask and token_type_ids (Gemma 3's processor only) are the
// padded sequences without
// their last token, labels the padded sequences' labels without their first (NeMo shifts in the collate). A label is
// set on each assistant turn's tokens after the marker through its end-of-turn token, except image tokens,
// <start_of_image>/<end_of_image> and padding, which are kIgnoreIndex. pixel_values holds every image (and its
// pan-and-scan crops) in the order their tokens appear across the batch, in float32 (NeMo casts to bfloat16 here; the
// model casts to its compute dtype). Errors name the conversation's record (a bad image file, no answer tokens).
data::Batch vlm_collate(const std::vector<const data::Conversation*>& conversations, const VlmProcessor& processor,
                        const VlmCollateOptions& options = {});

}  // namespace automodel::recipes
