#pragma once
// Raw records from local JSON / JSON-lines files: the local-file equivalent of Hugging Face
// `datasets.load_dataset(path, split=...)`, including HF's split-slice syntax.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace automodel::data {

// One part of an HF split expression: name[from:to], bounds absolute (may be negative) or percent.
struct SplitPart {
  std::string name;
  std::optional<int64_t> from, to;
  bool from_percent = false, to_percent = false;
  bool has_slice() const { return from.has_value() || to.has_value(); }
};

// Parses "train", "train[:100]", "train[10:20]", "train[-5:]", "train[:10%]", "train+validation[:3]".
// Error on anything else.
std::vector<SplitPart> parse_split(const std::string& split);
// The [begin, end) rows a part selects out of `num_rows` (HF ReadInstruction semantics: negative
// bounds count from the end, bounds are clamped, percentages round to the closest row).
std::pair<size_t, size_t> slice_bounds(const SplitPart& part, size_t num_rows);

// Records (JSON objects) of a local dataset. `path` is a .jsonl/.ndjson file (one object per line),
// a .json file (an array of objects, {"data": [...]}, one object, or JSON-lines content), or a
// directory, from which the files named for the split are read (train.jsonl, data/train-0000.json,
// validation <- valid/val/dev, test <- eval; a directory with unnamed files is all "train"),
// concatenated in path order. For a single file the split name is not checked (NeMo reads local
// files as one split) but its slice applies. Error naming the path (and the files found) otherwise.
std::vector<nlohmann::ordered_json> load_records(const std::string& path, const std::string& split);

// The JSON files load_records would read for `split` from directory `dir`.
std::vector<std::string> split_files(const std::string& dir, const std::string& split);

}  // namespace automodel::data
