#pragma once
// Greedy sequence packing as NeMo's pack_dataset (torchtune's): several samples concatenated into
// fixed-size packs, each keeping its own position ids and sequence id.
#include <cstdint>
#include <optional>
#include <vector>

#include "components/data/sample.h"

namespace automodel::data {

struct PackOptions {
  bool drop_long_samples = true;  // NeMo default: a sample longer than the pack is skipped; false: Error
  std::optional<int64_t> max_packs;
};

// Samples are appended in order to the current pack; when one does not fit, the pack is closed
// (padded) and the sample starts the next. Each pack is exactly packed_sequence_size long:
// position_ids restart at 0 for every sequence; seq_ids number the sequences 0, 1, 2, ...; the
// padding at the end has input_ids pad_id, labels kIgnoreIndex, attention_mask 0, seq_id -1 and
// position ids continuing the last sequence's (clamped to packed_sequence_size - 1, as NeMo).
// Each sample's tokens (its own padding included) are packed as they are, labels unchanged, so
// no label crosses a sequence boundary. Error when nothing is left to pack.
std::vector<Sample> pack_sequences(const std::vector<Sample>& samples, int64_t packed_sequence_size, int64_t pad_id,
                                   const PackOptions& opts = {});

}  // namespace automodel::data
