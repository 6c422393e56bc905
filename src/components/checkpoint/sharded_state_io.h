#pragma once
// Optimizer state written by the ranks of a sharded run, each its own part, and read back by a run of any number of
// ranks (or one process). Each state tensor of a rank holds a stretch of one whole tensor (1-D, row-major): its
// range. optim/ then holds rank_<r>/ per rank (optimizer.safetensors and optimizer.json, as save_optimizer_state
// writes them, the json's "shard" entry naming the world size and every tensor's range) instead of one
// optimizer.safetensors.
#include <cstdint>
#include <map>
#include <string>

#include "components/checkpoint/state_io.h"

namespace automodel::checkpoint {

// The elements [offset, offset + numel) of a whole tensor of `total` elements.
struct StateRange {
  int64_t offset = 0, numel = 0, total = 0;
};

// Rank `rank` of `world_size`: its state (the optimizer's state_dict()) with the range of every tensor, into
// dir/rank_<rank>/.
void save_optimizer_shard(const std::string& dir, int rank, int world_size, const std::map<std::string, Tensor>& state,
                          const std::map<std::string, StateRange>& ranges,
                          const std::map<std::string, int64_t>& step_counts, const nlohmann::json& extra);

// Fills `state` from dir, whether one process wrote it (optimizer.safetensors) or the ranks of a sharded run, of this
// run's number or another: each tensor takes its range (`ranges`; a tensor not in it is whole) from wherever the saved
// parts hold it. Error naming the tensor when a part is missing, a saved tensor has another size, a value is not
// finite, or (without ranges: a whole state) the saved state has a tensor `state` lacks. Returns the step counts and
// extra JSON (rank 0's for a sharded save).
OptimizerStateFiles load_optimizer_state_ranges(const std::string& dir, std::map<std::string, Tensor>& state,
                                                const std::map<std::string, StateRange>& ranges);

}  // namespace automodel::checkpoint
