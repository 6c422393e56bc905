#include "components/data/loader.h"

#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace automodel::data {

std::vector<size_t> epoch_permutation(size_t num_samples, uint64_t seed, int64_t epoch) {
  std::vector<size_t> order(num_samples);
  std::iota(order.begin(), order.end(), size_t(0));
  for (size_t i = num_samples; i-- > 1;) {
    auto r = philox4x32(seed, uint64_t(i), uint64_t(epoch));
    uint64_t bits = (uint64_t(r[1]) << 32) | r[0];
    // Lemire's multiply-shift: j uniform in [0, i] up to a 2^-64 bias, with no modulo.
    size_t j = size_t((static_cast<unsigned __int128>(bits) * (i + 1)) >> 64);
    std::swap(order[i], order[j]);
  }
  return order;
}

DataLoader::DataLoader(size_t num_samples, int64_t batch_size, bool shuffle, uint64_t seed, bool drop_last)
    : num_samples_(num_samples), batch_size_(batch_size), shuffle_(shuffle), seed_(seed), drop_last_(drop_last) {
  if (num_samples == 0) throw Error("the dataset is empty", "dataloader", "check the dataset path and split");
  if (batch_size <= 0)
    throw Error("batch_size must be positive, got " + std::to_string(batch_size), "dataloader.batch_size",
                "set a positive batch size");
  if (drop_last && num_samples < size_t(batch_size))
    throw Error("drop_last with " + std::to_string(num_samples) + " samples and batch_size " +
                    std::to_string(batch_size) + " leaves no batch",
                "dataloader.drop_last", "lower the batch size or set drop_last: false");
  set_epoch(0);
}

size_t DataLoader::num_batches() const {
  size_t bs = size_t(batch_size_);
  return drop_last_ ? num_samples_ / bs : (num_samples_ + bs - 1) / bs;
}

void DataLoader::set_epoch(int64_t epoch) {
  epoch_ = epoch;
  batches_yielded_ = 0;
  if (shuffle_) {
    order_ = epoch_permutation(num_samples_, seed_, epoch);
  } else {
    order_.resize(num_samples_);
    std::iota(order_.begin(), order_.end(), size_t(0));
  }
}

bool DataLoader::next(std::vector<size_t>& indices) {
  indices.clear();
  if (batches_yielded_ >= num_batches()) return false;
  size_t begin = batches_yielded_ * size_t(batch_size_);
  size_t end = std::min(begin + size_t(batch_size_), num_samples_);
  indices.assign(order_.begin() + begin, order_.begin() + end);
  ++batches_yielded_;
  return true;
}

nlohmann::json DataLoader::state_dict() const {
  return {{"epoch", epoch_},
          {"batches_yielded", batches_yielded_},
          {"seed", seed_},
          {"shuffle", shuffle_},
          {"drop_last", drop_last_},
          {"num_samples", num_samples_},
          {"batch_size", batch_size_}};
}

void DataLoader::load_state_dict(const nlohmann::json& state) {
  const char* hint =
      "resume with the dataset and dataloader settings of the saved run, or start without the "
      "dataloader state";
  for (const char* key : {"epoch", "batches_yielded", "seed", "shuffle", "drop_last", "num_samples", "batch_size"})
    if (!state.is_object() || !state.contains(key))
      throw Error(std::string("dataloader state has no '") + key + "'", "dataloader state", hint);
  auto mismatch = [&](const char* key, const std::string& saved, const std::string& now) {
    throw Error(std::string("dataloader state was saved with ") + key + " " + saved + ", this run has " + now,
                "dataloader state", hint);
  };
  try {
    if (state["num_samples"].get<size_t>() != num_samples_)
      mismatch("num_samples", state["num_samples"].dump(), std::to_string(num_samples_));
    if (state["batch_size"].get<int64_t>() != batch_size_)
      mismatch("batch_size", state["batch_size"].dump(), std::to_string(batch_size_));
    if (state["shuffle"].get<bool>() != shuffle_)
      mismatch("shuffle", state["shuffle"].dump(), shuffle_ ? "true" : "false");
    if (state["drop_last"].get<bool>() != drop_last_)
      mismatch("drop_last", state["drop_last"].dump(), drop_last_ ? "true" : "false");
    size_t yielded = state["batches_yielded"].get<size_t>();
    if (yielded > num_batches())
      throw Error("dataloader state has batches_yielded " + std::to_string(yielded) + " > " +
                      std::to_string(num_batches()) + " batches per epoch",
                  "dataloader state", hint);
    seed_ = state["seed"].get<uint64_t>();
    set_epoch(state["epoch"].get<int64_t>());
    batches_yielded_ = yielded;
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("malformed dataloader state: ") + e.what(), "dataloader state", hint);
  }
}

}  // namespace automodel::data
