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

// The records (JSON objects) of a local dataset, read one at a time: opening indexes where each record lies
// (one streaming pass, no record held in memory), at(i) reads and parses record i. `path` is a .jsonl/.ndjson
// file (one object per line), a .json file (an array of objects, {"data": [...]}, one object, or JSON-lines
// content), either of them compressed (.gz, .zst), a .parquet file, or a directory, from which the files named
// for the split are read (train.jsonl, data/train-0000.parquet, validation <- valid/val/dev, test <- eval; a
// directory with unnamed files is all "train"), concatenated in path order. For a single file the split name is
// not checked (NeMo reads local files as one split) but its slice applies. Error naming the path (and the files
// found) otherwise. Compressed and Parquet files are read through a plain copy in the dataset cache
// (file_formats.h). Thread-safe: at() reads with pread.
class RecordSource {
 public:
  RecordSource(const std::string& path, const std::string& split);
  ~RecordSource();
  RecordSource(const RecordSource&) = delete;
  RecordSource& operator=(const RecordSource&) = delete;

  size_t size() const { return records_.size(); }
  // Record i parsed; Error naming where(i) when it is not valid JSON or not an object.
  nlohmann::ordered_json at(size_t i) const;
  // "<file>:<line> [record i]" (JSON lines) or "<file> [record i]": where record i of the dataset is.
  std::string where(size_t i) const;
  // The file record i was read from, as the user named it (image paths in it are relative to its directory).
  const std::string& file_of(size_t i) const { return files_[records_.at(i).file].path; }

 private:
  struct File {
    std::string path;       // as the user named it
    std::string read_path;  // the plain file read (itself, or its cached copy)
    int fd = -1;
    bool json_lines = false;
  };
  struct Record {
    uint64_t offset, length, label;
    uint32_t file;
  };
  std::vector<File> files_;
  std::vector<Record> records_;
};

// Every record of a dataset at once (small datasets and tests).
std::vector<nlohmann::ordered_json> load_records(const std::string& path, const std::string& split);

// The dataset files load_records would read for `split` from directory `dir`.
std::vector<std::string> split_files(const std::string& dir, const std::string& split);

}  // namespace automodel::data
