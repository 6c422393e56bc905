#pragma once
// Where each record of a JSON-lines or JSON file starts and ends, found by one streaming pass over its bytes
// (strings, escapes and nesting only: a record's own syntax is checked when it is parsed), so a dataset of any size
// is indexed without holding its records in memory.
#include <cstdint>
#include <string>
#include <vector>

namespace automodel::data {

struct RecordSpan {
  uint64_t offset = 0;  // byte offset in the file
  uint64_t length = 0;
  uint64_t label = 0;  // 1-based line (JSON lines) or 0-based element index (JSON array)
};

// One object per non-blank line. Error (naming path:line) for a line that is not an object.
std::vector<RecordSpan> index_json_lines(const std::string& path);

// A .json file: the elements of a top-level array or of {"data": [...]}, else the one top-level object; content
// with more than one top-level value is read as JSON lines (as HF's json builder does). Error for a file that
// ends inside a value, or an element that is not an object.
struct JsonFileIndex {
  std::vector<RecordSpan> spans;
  bool json_lines = false;  // labels are lines
};
JsonFileIndex index_json_file(const std::string& path);

}  // namespace automodel::data
