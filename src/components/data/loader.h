#pragma once
// Batches of sample indices over a map-style dataset, with torchdata StatefulDataLoader semantics:
// a seeded shuffle per epoch and a state that, saved after batch k and restored, yields batch k+1.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

namespace automodel::data {

// The order of an epoch: 0..n-1, or a Fisher-Yates shuffle drawn from Philox4x32 keyed by `seed`
// with counter (step, epoch), so it is a pure function of (n, seed, epoch) on every machine.
std::vector<size_t> epoch_permutation(size_t num_samples, uint64_t seed, int64_t epoch);

class DataLoader {
 public:
  DataLoader(size_t num_samples, int64_t batch_size, bool shuffle, uint64_t seed, bool drop_last = false);

  size_t num_batches() const;     // per epoch (len(dataloader)); the last may be short unless drop_last
  void set_epoch(int64_t epoch);  // restarts at batch 0 of that epoch
  // The next batch's sample indices; false (indices cleared) at the end of the epoch.
  bool next(std::vector<size_t>& indices);

  int64_t epoch() const { return epoch_; }
  size_t batches_yielded() const { return batches_yielded_; }
  size_t num_samples() const { return num_samples_; }
  int64_t batch_size() const { return batch_size_; }

  // {"epoch", "batches_yielded", "seed", "shuffle", "drop_last", "num_samples", "batch_size"}.
  nlohmann::json state_dict() const;
  // Continues exactly after the saved batch (with the saved seed). Error when the state is malformed
  // or was saved for another dataset size, batch size, shuffle or drop_last.
  void load_state_dict(const nlohmann::json& state);

 private:
  size_t num_samples_;
  int64_t batch_size_;
  bool shuffle_;
  uint64_t seed_;
  bool drop_last_;
  int64_t epoch_ = 0;
  size_t batches_yielded_ = 0;
  std::vector<size_t> order_;  // this epoch's sample order
};

}  // namespace automodel::data
