#include "components/data/packing.h"

#include <algorithm>

#include "core/error.h"

namespace automodel::data {

namespace {

void close_pack(Sample& pack, int64_t size, int64_t pad_id, std::vector<Sample>& packs) {
  const size_t real = pack.input_ids.size(), total = size_t(size);
  int64_t next_position = pack.position_ids.empty() ? 0 : pack.position_ids.back() + 1;
  pack.input_ids.resize(total, pad_id);
  pack.labels.resize(total, kIgnoreIndex);
  pack.seq_ids.resize(total, -1);
  for (size_t i = real; i < total; ++i) pack.position_ids.push_back(std::min(next_position++, size - 1));
  pack.attention_mask.resize(total, 0);
  packs.push_back(std::move(pack));
  pack = Sample();
}

}  // namespace

std::vector<Sample> pack_sequences(const std::vector<Sample>& samples, int64_t packed_sequence_size, int64_t pad_id,
                                   const PackOptions& opts) {
  if (packed_sequence_size <= 0)
    throw Error("packed_sequence_size must be positive, got " + std::to_string(packed_sequence_size),
                "dataset.packed_sequence_size", "set it to the training sequence length, or 0 to disable packing");
  if (opts.max_packs && *opts.max_packs <= 0)
    throw Error("max_packs must be positive", "dataset.max_packs", "set a positive count or leave it unset");
  std::vector<Sample> packs;
  Sample pack;
  int64_t next_seq_id = 0;
  auto full = [&]() { return opts.max_packs && int64_t(packs.size()) >= *opts.max_packs; };
  for (size_t i = 0; i < samples.size() && !full(); ++i) {
    const Sample& s = samples[i];
    if (s.packed())
      throw Error("sample " + std::to_string(i) + " is already packed", "pack_sequences", "pack unpacked samples");
    if (s.labels.size() != s.input_ids.size())
      throw Error("sample " + std::to_string(i) + " has " + std::to_string(s.input_ids.size()) + " input ids but " +
                      std::to_string(s.labels.size()) + " labels",
                  "pack_sequences");
    const int64_t len = int64_t(s.input_ids.size());
    if (len == 0) continue;
    if (len > packed_sequence_size) {
      if (opts.drop_long_samples) continue;
      throw Error("sample " + std::to_string(i) + " is longer than a pack (" + std::to_string(len) + " > " +
                      std::to_string(packed_sequence_size) + ")",
                  "dataset.packed_sequence_size", "increase packed_sequence_size or set drop_long_samples");
    }
    if (int64_t(pack.input_ids.size()) + len > packed_sequence_size) {
      close_pack(pack, packed_sequence_size, pad_id, packs);
      next_seq_id = 0;
      if (full()) break;
    }
    pack.input_ids.insert(pack.input_ids.end(), s.input_ids.begin(), s.input_ids.end());
    pack.labels.insert(pack.labels.end(), s.labels.begin(), s.labels.end());
    for (int64_t p = 0; p < len; ++p) pack.position_ids.push_back(p);
    pack.seq_ids.insert(pack.seq_ids.end(), size_t(len), next_seq_id++);
    pack.attention_mask.insert(pack.attention_mask.end(), size_t(len), 1);
  }
  if (!pack.input_ids.empty() && !full()) close_pack(pack, packed_sequence_size, pad_id, packs);
  if (packs.empty())
    throw Error("no packs were produced: every sample was longer than packed_sequence_size=" +
                    std::to_string(packed_sequence_size) + " (and dropped) or the dataset was empty",
                "dataset.packed_sequence_size", "increase packed_sequence_size or provide samples that fit");
  return packs;
}

}  // namespace automodel::data
