#pragma once
// Model weights and optimizer state written by the ranks of a sharded run, each its own part, and read back by a run of
// any number of ranks (or one process). Each tensor a rank writes holds a stretch of one whole tensor (1-D,
// row-major): its range.
// - optim/ holds rank_<r>/ per rank (optimizer.safetensors and optimizer.json, as save_optimizer_state writes them,
//   the json's "shard" entry naming the world size and every tensor's range) instead of one optimizer.safetensors.
// - model/sharded/ holds rank_<r>.safetensors per rank (its stretch of each parameter, by parameter name) and
//   index.json: every parameter's shape and dtype and which stretch each rank's file holds.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

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
// finite, or (without ranges: a whole state) the saved state has a tensor `state` lacks. Returns the step counts (of
// every part) and extra JSON (rank 0's for a sharded save).
OptimizerStateFiles load_optimizer_state_ranges(const std::string& dir, std::map<std::string, Tensor>& state,
                                                const std::map<std::string, StateRange>& ranges);

// model/sharded/ (dir): rank `rank`'s stretch of each parameter its shard touches.
void save_model_shard(const std::string& dir, int rank, const std::map<std::string, Tensor>& stretches);
// model/sharded/index.json: the whole `parameters`' shapes and dtypes, and ranges[r] the stretches rank r's file holds.
void save_model_shard_index(const std::string& dir, const std::map<std::string, Tensor>& parameters,
                            const std::vector<std::map<std::string, StateRange>>& ranges);
// Fills each of `stretches` (the range `ranges` names of its parameter) from the files of a run of any number of
// ranks. Error naming the parameter when it is missing, has another shape or dtype, or holds a non-finite value.
void load_model_shard(const std::string& dir, std::map<std::string, Tensor>& stretches,
                      const std::map<std::string, StateRange>& ranges);

}  // namespace automodel::checkpoint
