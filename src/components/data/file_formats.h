#pragma once
// Dataset files by format: plain .json / .jsonl are read where they are; compressed ones (.gz, .zst) and Parquet
// files are turned once into a plain file in the dataset cache (as HF datasets keeps its Arrow cache), so every
// record can be read on its own by byte offset.
#include <string>

namespace automodel::data {

// .json, .jsonl or .ndjson, optionally followed by .gz / .zst / .zstd; or .parquet.
bool is_dataset_file(const std::string& path);

struct PlainFile {
  std::string path;
  bool json_lines = false;  // one record per line (else a .json document)
};
// The plain JSON file `path` reads as: the file itself, or its cached decompression / conversion to JSON lines,
// made on first use and keyed by the file's absolute path, size and modification time.
PlainFile plain_json_file(const std::string& path);

// $AUTOMODEL_CACHE_DIR, else $XDG_CACHE_HOME/automodel, else ~/.cache/automodel; datasets go under datasets/.
std::string dataset_cache_dir();

// Writes a Parquet file's rows as JSON lines (one object per row, columns as keys; lists, structs and maps
// nested). Error when this build has no Parquet reader (it is optional: Apache Arrow from the pyarrow wheel).
void parquet_to_json_lines(const std::string& parquet_path, const std::string& out_path);

}  // namespace automodel::data
