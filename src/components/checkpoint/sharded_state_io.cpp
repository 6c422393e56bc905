#include "components/checkpoint/sharded_state_io.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

namespace automodel::checkpoint {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kHint = "resume from a complete checkpoint of the same model and optimizer";

constexpr const char* kModelIndex = "index.json";

fs::path rank_dir(const std::string& dir, int rank) { return fs::path(dir) / ("rank_" + std::to_string(rank)); }
std::string rank_file(int rank) { return "rank_" + std::to_string(rank) + ".safetensors"; }

void require_finite(const std::string& what, const Tensor& t, const std::string& dir) {
  if (is_floating(t.dtype()))
    for (double v : t.to_doubles())
      if (!std::isfinite(v)) throw Error(what + " holds a non-finite value", dir, "resume from an earlier checkpoint");
}

// One saved part: its tensors and the range of each in its whole tensor.
struct SavedPart {
  std::string file;
  std::map<std::string, Tensor> tensors;
  std::map<std::string, StateRange> ranges;
};

StateRange whole(const Tensor& t) { return {0, t.numel(), t.numel()}; }

// A stretch of a whole tensor that a saved file holds.
struct SavedStretch {
  const char* bytes;
  DType dtype;
  StateRange range;
  std::string file;
};

// Copies into t, which holds `want` of its whole tensor, what the saved stretches hold of it (they may overlap).
// Error when they were saved from a tensor of another size or dtype, or do not cover all of `want`.
void fill_range(const std::string& what, const Tensor& t, const StateRange& want, const std::vector<SavedStretch>& from,
                const std::string& dir) {
  const size_t element = dtype_size(t.dtype());
  std::vector<std::pair<int64_t, int64_t>> copied;  // [lo, hi) of the whole tensor
  for (const SavedStretch& s : from) {
    if (s.range.total != want.total || s.dtype != t.dtype())
      throw Error(what + " was saved with " + std::to_string(s.range.total) + " elements of " + dtype_name(s.dtype) +
                      ", this run has " + std::to_string(want.total) + " of " + dtype_name(t.dtype()),
                  s.file, kHint);
    const int64_t lo = std::max(s.range.offset, want.offset);
    const int64_t hi = std::min(s.range.offset + s.range.numel, want.offset + want.numel);
    if (lo >= hi) continue;
    std::memcpy(static_cast<char*>(t.raw_data()) + size_t(lo - want.offset) * element,
                s.bytes + size_t(lo - s.range.offset) * element, size_t(hi - lo) * element);
    copied.emplace_back(lo, hi);
  }
  std::sort(copied.begin(), copied.end());
  int64_t filled = 0, covered_to = want.offset;
  for (const auto& [lo, hi] : copied) {
    filled += std::max<int64_t>(0, hi - std::max(lo, covered_to));
    covered_to = std::max(covered_to, hi);
  }
  if (filled != want.numel)
    throw Error(what + " is missing from the checkpoint (" + std::to_string(filled) + " of " +
                    std::to_string(want.numel) + " elements found)",
                dir, kHint);
}

StateRange parse_range(const json& r, const std::string& where) {
  if (!r.is_array() || r.size() != 3 || !r[0].is_number_integer() || !r[1].is_number_integer() ||
      !r[2].is_number_integer())
    throw Error("a tensor range is not [offset, numel, total]", where, kHint);
  StateRange out{r[0].get<int64_t>(), r[1].get<int64_t>(), r[2].get<int64_t>()};
  if (out.offset < 0 || out.numel < 0 || out.offset + out.numel > out.total)
    throw Error("tensor range [" + std::to_string(out.offset) + ", " + std::to_string(out.offset + out.numel) +
                    ") lies outside its " + std::to_string(out.total) + " elements",
                where, kHint);
  return out;
}

// The "shard" entry of a part's optimizer.json ({} when absent).
json shard_of(const OptimizerStateFiles& meta, const std::string& where) {
  const json shard = meta.extra.value("shard", json::object());
  if (!shard.is_object() || !shard.value("ranges", json::object()).is_object())
    throw Error("the 'shard' entry is not an object with a 'ranges' object", where, kHint);
  return shard;
}

// The parts dir holds: one whole-state file, or every rank's.
// rank0_meta: rank 0's optimizer.json, with the step counts of every rank's.
std::vector<SavedPart> read_parts(const std::string& dir, OptimizerStateFiles& rank0_meta) {
  std::vector<SavedPart> parts;
  if (fs::exists(fs::path(dir) / "optimizer.safetensors")) {
    SavedPart p{(fs::path(dir) / "optimizer.safetensors").string(),
                load_tensors((fs::path(dir) / "optimizer.safetensors").string()),
                {}};
    for (const auto& [name, t] : p.tensors) p.ranges[name] = whole(t);
    rank0_meta = load_optimizer_meta((fs::path(dir) / "optimizer.json").string());
    parts.push_back(std::move(p));
    return parts;
  }
  const std::string meta0 = (rank_dir(dir, 0) / "optimizer.json").string();
  if (!fs::exists(meta0)) throw Error("no optimizer state (neither optimizer.safetensors nor rank_0/)", dir, kHint);
  rank0_meta = load_optimizer_meta(meta0);
  const json shard = shard_of(rank0_meta, meta0);
  if (!shard.contains("world_size") || !shard["world_size"].is_number_integer() || shard["world_size"].get<int>() < 1)
    throw Error("rank 0's optimizer state names no world_size", meta0, kHint);
  const int world = shard["world_size"].get<int>();
  for (int r = 0; r < world; ++r) {
    const fs::path d = rank_dir(dir, r);
    const std::string meta_path = (d / "optimizer.json").string();
    if (!fs::exists(meta_path))
      throw Error("the optimizer state of rank " + std::to_string(r) + " of " + std::to_string(world) + " is missing",
                  d.string(), kHint);
    const OptimizerStateFiles meta = load_optimizer_meta(meta_path);
    // Each rank counts the steps of the parameters its shard touches: together, every parameter's.
    for (const auto& [name, n] : meta.step_counts) rank0_meta.step_counts.emplace(name, n);
    const json ranges = shard_of(meta, meta_path).value("ranges", json::object());
    SavedPart p{(d / "optimizer.safetensors").string(), load_tensors((d / "optimizer.safetensors").string()), {}};
    for (const auto& [name, t] : p.tensors) {
      p.ranges[name] = ranges.contains(name) ? parse_range(ranges[name], meta_path + ": " + name) : whole(t);
      if (p.ranges[name].numel != t.numel())
        throw Error("tensor '" + name + "' holds " + std::to_string(t.numel()) + " elements but its range " +
                        std::to_string(p.ranges[name].numel),
                    p.file, kHint);
    }
    parts.push_back(std::move(p));
  }
  return parts;
}

}  // namespace

void save_optimizer_shard(const std::string& dir, int rank, int world_size, const std::map<std::string, Tensor>& state,
                          const std::map<std::string, StateRange>& ranges,
                          const std::map<std::string, int64_t>& step_counts, const json& extra) {
  json shard_ranges = json::object();
  for (const auto& [name, t] : state) {
    const auto it = ranges.find(name);
    const StateRange r = it == ranges.end() ? whole(t) : it->second;
    shard_ranges[name] = {r.offset, r.numel, r.total};
  }
  json with_shard = extra;
  with_shard["shard"] = {{"rank", rank}, {"world_size", world_size}, {"ranges", shard_ranges}};
  const fs::path d = rank_dir(dir, rank);
  fs::create_directories(d);
  save_optimizer_state(d.string(), state, step_counts, with_shard);
}

OptimizerStateFiles load_optimizer_state_ranges(const std::string& dir, std::map<std::string, Tensor>& state,
                                                const std::map<std::string, StateRange>& ranges) {
  OptimizerStateFiles meta;
  const std::vector<SavedPart> parts = read_parts(dir, meta);
  // A sharded run's state holds only the tensors its shard touches; a whole one must account for every saved tensor.
  for (const SavedPart& p : parts)
    for (const auto& [name, t] : p.tensors)
      if (ranges.empty() && !state.count(name))
        throw Error("the saved optimizer state has '" + name + "', which this run's optimizer does not", p.file,
                    "resume with the optimizer (and peft settings) the checkpoint was trained with");
  for (auto& [name, t] : state) {
    const auto it = ranges.find(name);
    const StateRange want = it == ranges.end() ? whole(t) : it->second;
    AM_CHECK(t.is_contiguous() && want.numel == t.numel(), "load_optimizer_state_ranges: '", name,
             "' does not hold its range");
    std::vector<SavedStretch> from;
    for (const SavedPart& p : parts) {
      const auto saved = p.tensors.find(name);
      if (saved == p.tensors.end()) continue;
      from.push_back(
          {static_cast<const char*>(saved->second.raw_data()), saved->second.dtype(), p.ranges.at(name), p.file});
    }
    fill_range("optimizer state '" + name + "'", t, want, from, dir);
    require_finite("optimizer state '" + name + "'", t, dir);
  }
  meta.extra.erase("shard");
  return meta;
}

void save_model_shard(const std::string& dir, int rank, const std::map<std::string, Tensor>& stretches) {
  fs::create_directories(dir);
  save_tensors((fs::path(dir) / rank_file(rank)).string(), stretches);
}

void save_model_shard_index(const std::string& dir, const std::map<std::string, Tensor>& parameters,
                            const std::vector<std::map<std::string, StateRange>>& ranges) {
  json index = {{"world_size", ranges.size()}, {"parameters", json::object()}};
  for (const auto& [name, p] : parameters) {
    json parts = json::array();
    for (size_t r = 0; r < ranges.size(); ++r)
      if (const auto it = ranges[r].find(name); it != ranges[r].end())
        parts.push_back({{"file", rank_file(int(r))}, {"offset", it->second.offset}, {"numel", it->second.numel}});
    index["parameters"][name] = {{"shape", p.shape()}, {"dtype", dtype_name(p.dtype())}, {"parts", parts}};
  }
  fs::create_directories(dir);
  save_json((fs::path(dir) / kModelIndex).string(), index);
}

void load_model_shard(const std::string& dir, std::map<std::string, Tensor>& stretches,
                      const std::map<std::string, StateRange>& ranges) {
  const std::string index_path = (fs::path(dir) / kModelIndex).string();
  const json index = load_json(index_path);
  const json params = index.is_object() ? index.value("parameters", json()) : json();
  if (!params.is_object()) throw Error("the index has no 'parameters' object", index_path, kHint);
  std::map<std::string, std::unique_ptr<io::SafetensorsReader>> files;
  for (auto& [name, t] : stretches) {
    const std::string where = index_path + ": " + name;
    const json entry = params.value(name, json());
    if (!entry.is_object() || !entry.value("parts", json()).is_array() || !entry.value("shape", json()).is_array())
      throw Error("model weight '" + name + "' has no entry with 'shape' and 'parts'", where,
                  "resume from a checkpoint of the same model");
    const StateRange want = ranges.at(name);
    std::vector<SavedStretch> from;
    for (const json& part : entry["parts"]) {
      if (!part.is_object() || !part.value("file", json()).is_string())
        throw Error("a part is not an object naming its file", where, kHint);
      const std::string file = part["file"].get<std::string>();
      if (file.find('/') != std::string::npos || file.find("..") != std::string::npos)
        throw Error("a part names a file outside the directory: '" + file + "'", where, kHint);
      const StateRange have =
          parse_range(json::array({part.value("offset", json()), part.value("numel", json()), want.total}), where);
      auto& reader = files[file];
      if (!reader) reader = std::make_unique<io::SafetensorsReader>((fs::path(dir) / file).string());
      if (!reader->contains(name) || reader->info(name).numel() != have.numel)
        throw Error("model weight '" + name + "' is not in the file as its index says (" + std::to_string(have.numel) +
                        " elements)",
                    reader->path(), kHint);
      if (reader->info(name).dtype != io::safetensors_dtype_name(t.dtype()))
        throw Error("model weight '" + name + "' was saved as " + reader->info(name).dtype + ", this run has " +
                        dtype_name(t.dtype()),
                    reader->path(), "resume with the dtype the checkpoint was trained with");
      from.push_back({reinterpret_cast<const char*>(reader->raw_bytes(name)), t.dtype(), have, reader->path()});
    }
    int64_t total = 1;
    for (const json& d : entry["shape"])
      if (!d.is_number_integer() || d.get<int64_t>() < 0 || __builtin_mul_overflow(total, d.get<int64_t>(), &total))
        throw Error("model weight '" + name + "' has a shape that is not a list of sizes", where, kHint);
    if (total != want.total)
      throw Error("model weight '" + name + "' has " + std::to_string(total) + " elements in the checkpoint, " +
                      std::to_string(want.total) + " in the model",
                  where, "resume from a checkpoint of the same model configuration");
    fill_range("model weight '" + name + "'", t, want, from, dir);
    require_finite("model weight '" + name + "'", t, dir);
  }
}

}  // namespace automodel::checkpoint
