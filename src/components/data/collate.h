#pragma once
// Batching Samples into [B, T] int64 tensors, as NeMo's default_collater pads a micro-batch.
#include <cstdint>
#include <optional>
#include <vector>

#include "components/data/sample.h"
#include "core/tensor.h"

namespace automodel::data {

struct Batch {
  Tensor input_ids, labels;  // i64 [B, T]; padding: pad_id / kIgnoreIndex
  Tensor attention_mask;     // i64 [B, T]; 1 real token, 0 padding (the sample's own mask, then 0)
  Tensor position_ids;       // i64 [B, T] when the samples are packed (padding 0), else undefined
  Tensor seq_ids;            // i64 [B, T] when the samples are packed (padding -1), else undefined
  // Vision-language batches only (recipes/vlm_collate.h), else undefined:
  Tensor token_type_ids;         // i64 [B, T]; 1 at image tokens, 0 elsewhere (padding too)
  Tensor pixel_values;           // f32 [images, 3, H, W] in the order their tokens appear across the batch; undefined
                                 // when the batch has no image
  int64_t num_label_tokens = 0;  // labels != kIgnoreIndex over the batch
};

// Pads every sample to T = the longest (or pad_to_length) rounded up to a multiple of
// pad_to_multiple_of (NeMo's pad_seq_len_divisible). Error on an empty batch, a sample longer than
// pad_to_length, or a mix of packed and unpacked samples.
Batch default_collater(const std::vector<const Sample*>& samples, int64_t pad_id,
                       std::optional<int64_t> pad_to_length = {}, int64_t pad_to_multiple_of = 1);

}  // namespace automodel::data
