#include "components/data/collate.h"

#include <algorithm>

#include "core/error.h"

namespace automodel::data {

Batch default_collater(const std::vector<const Sample*>& samples, int64_t pad_id, std::optional<int64_t> pad_to_length,
                       int64_t pad_to_multiple_of) {
  if (samples.empty()) throw Error("cannot collate an empty batch", "default_collater");
  if (pad_to_multiple_of <= 0)
    throw Error("pad_to_multiple_of must be positive, got " + std::to_string(pad_to_multiple_of), "default_collater");
  const bool packed = samples[0]->packed();
  int64_t longest = 0;
  for (size_t b = 0; b < samples.size(); ++b) {
    const Sample& s = *samples[b];
    if (s.packed() != packed)
      throw Error("batch mixes packed and unpacked samples", "default_collater", "pack all samples or none");
    if (s.labels.size() != s.input_ids.size() ||
        (!s.attention_mask.empty() && s.attention_mask.size() != s.input_ids.size()) ||
        (packed && (s.position_ids.size() != s.input_ids.size() || s.seq_ids.size() != s.input_ids.size())))
      throw Error("sample " + std::to_string(b) + " of the batch has fields of different lengths", "default_collater");
    longest = std::max<int64_t>(longest, int64_t(s.input_ids.size()));
  }
  int64_t T = longest;
  if (pad_to_length) {
    if (longest > *pad_to_length)
      throw Error("a sample of " + std::to_string(longest) + " tokens is longer than pad_to_length " +
                      std::to_string(*pad_to_length),
                  "default_collater", "truncate the dataset to the sequence length or raise it");
    T = *pad_to_length;
  }
  T = (T + pad_to_multiple_of - 1) / pad_to_multiple_of * pad_to_multiple_of;
  const int64_t B = int64_t(samples.size());
  std::vector<int64_t> ids(size_t(B * T), pad_id), labels(size_t(B * T), kIgnoreIndex), mask(size_t(B * T), 0);
  std::vector<int64_t> positions, seqs;
  if (packed) {
    positions.assign(size_t(B * T), 0);
    seqs.assign(size_t(B * T), -1);
  }
  Batch batch;
  for (int64_t b = 0; b < B; ++b) {
    const Sample& s = *samples[size_t(b)];
    const size_t row = size_t(b * T), n = s.input_ids.size();
    std::copy(s.input_ids.begin(), s.input_ids.end(), ids.begin() + row);
    std::copy(s.labels.begin(), s.labels.end(), labels.begin() + row);
    if (s.attention_mask.empty())
      std::fill(mask.begin() + row, mask.begin() + row + n, 1);
    else
      std::copy(s.attention_mask.begin(), s.attention_mask.end(), mask.begin() + row);
    if (packed) {
      std::copy(s.position_ids.begin(), s.position_ids.end(), positions.begin() + row);
      std::copy(s.seq_ids.begin(), s.seq_ids.end(), seqs.begin() + row);
    }
    batch.num_label_tokens += s.num_label_tokens();
  }
  batch.input_ids = Tensor::from_vector(ids, {B, T});
  batch.labels = Tensor::from_vector(labels, {B, T});
  batch.attention_mask = Tensor::from_vector(mask, {B, T});
  if (packed) {
    batch.position_ids = Tensor::from_vector(positions, {B, T});
    batch.seq_ids = Tensor::from_vector(seqs, {B, T});
  }
  return batch;
}

}  // namespace automodel::data
