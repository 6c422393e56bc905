#include "components/data/json_index.h"

#include <cstdio>
#include <cstring>
#include <memory>

#include "core/error.h"

namespace automodel::data {

namespace {

constexpr size_t kChunk = size_t(4) << 20;

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

FilePtr open_file(const std::string& path) {
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f)
    throw Error("cannot open dataset file: " + std::string(std::strerror(errno)), path,
                "check the path and its permissions");
  return f;
}

// Calls on_byte(offset, byte) for every byte of the file, in order.
template <class F>
void for_each_byte(const std::string& path, F&& on_byte) {
  FilePtr f = open_file(path);
  std::vector<char> buf(kChunk);
  uint64_t base = 0;
  while (size_t n = std::fread(buf.data(), 1, buf.size(), f.get())) {
    for (size_t i = 0; i < n; ++i) on_byte(base + i, static_cast<unsigned char>(buf[i]));
    base += n;
  }
  if (std::ferror(f.get())) throw Error("cannot read dataset file", path, "check the file and the disk");
}

bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// The JSON type a value starting with `c` has, for "record is a JSON <type>, not an object".
const char* json_type_of(unsigned char c) {
  switch (c) {
    case '[': return "array";
    case '"': return "string";
    case 't':
    case 'f': return "boolean";
    case 'n': return "null";
    default: return (c == '-' || (c >= '0' && c <= '9')) ? "number" : nullptr;
  }
}

[[noreturn]] void not_an_object(unsigned char first, const std::string& where) {
  if (const char* type = json_type_of(first))
    throw Error(std::string("dataset record is a JSON ") + type + ", not an object", where,
                "each record must be a JSON object such as {\"question\": ..., \"answer\": ...}");
  throw Error(std::string("invalid JSON: a record cannot start with '") + char(first) + "'", where,
              "each record must be a JSON object such as {\"question\": ..., \"answer\": ...}");
}

}  // namespace

std::vector<RecordSpan> index_json_lines(const std::string& path) {
  std::vector<RecordSpan> spans;
  uint64_t line = 1, first = 0, last = 0;
  bool blank = true;
  auto end_line = [&]() {
    if (!blank) spans.push_back({first, last + 1 - first, line});
    blank = true;
  };
  for_each_byte(path, [&](uint64_t at, unsigned char c) {
    if (c == '\n') {
      end_line();
      ++line;
      return;
    }
    if (is_space(c)) return;
    if (blank) {
      if (c != '{') not_an_object(c, path + ":" + std::to_string(line));
      blank = false;
      first = at;
    }
    last = at;
  });
  end_line();
  return spans;
}

JsonFileIndex index_json_file(const std::string& path) {
  // A streaming structural scan: depth, strings and escapes; the keys of the top-level object are followed far
  // enough to find "data".
  JsonFileIndex out;
  int64_t depth = 0;
  bool in_string = false, escape = false, saw_newline = false, more_values = false, bad = false;
  unsigned char top = 0;
  uint64_t top_start = 0, top_end = 0;
  bool top_done = false;
  int64_t record_depth = 0;  // depth of the record array's elements; 0 while none is known
  bool in_records = false;   // inside the record array
  uint64_t element_start = 0;
  bool in_element = false;
  // Keys of the top-level object.
  bool expect_key = false, collecting_key = false, expect_value = false;
  std::string key;
  std::string element_error;

  for_each_byte(path, [&](uint64_t at, unsigned char c) {
    if (bad || more_values) return;
    if (c == '\n') saw_newline = true;
    if (in_string) {
      if (escape) {
        escape = false;
      } else if (c == '\\') {
        escape = true;
      } else if (c == '"') {
        in_string = false;
        if (collecting_key) collecting_key = false;
      } else if (collecting_key && key.size() < 8) {
        key += char(c);
      }
      return;
    }
    if (is_space(c)) return;
    if (top_done) {
      more_values = true;
      return;
    }
    if (depth == 0) {
      if (top != 0) return;
      top = c;
      top_start = at;
      if (c != '{' && c != '[') {
        bad = true;
        return;
      }
      if (c == '[') record_depth = 1, in_records = true;
    }
    // An element of the record array starts here.
    if (in_records && depth == record_depth && !in_element && c != ',' && c != ']') {
      if (c != '{') {
        element_error = json_type_of(c) ? json_type_of(c) : "invalid";
        element_start = at;
        bad = true;
        return;
      }
      in_element = true;
      element_start = at;
    }
    if (top == '{' && depth == 1 && record_depth == 0) {
      if (expect_value) {
        expect_value = false;
        if (c == '[' && key == "data") record_depth = 2, in_records = true;
      } else if (c == ':') {
        expect_value = true;
      } else if (c == ',') {
        expect_key = true;
      } else if (c == '"' && expect_key) {
        expect_key = false;
        collecting_key = true;
        key.clear();
      }
    }
    switch (c) {
      case '"': in_string = true; break;
      case '{':
      case '[':
        ++depth;
        if (depth == 1 && c == '{') expect_key = true;
        break;
      case '}':
      case ']':
        --depth;
        if (depth < 0) {
          bad = true;
          return;
        }
        if (in_element && depth == record_depth) {
          out.spans.push_back({element_start, at + 1 - element_start, uint64_t(out.spans.size())});
          in_element = false;
        }
        if (in_records && depth < record_depth) in_records = false;
        if (depth == 0) {
          top_done = true;
          top_end = at + 1;
        }
        break;
      default: break;
    }
  });

  if (!element_error.empty() && element_error != "invalid")
    throw Error("dataset record is a JSON " + element_error + ", not an object",
                path + " [record " + std::to_string(out.spans.size()) + "]",
                "each record must be a JSON object such as {\"question\": ..., \"answer\": ...}");
  if (more_values || ((bad || !top_done) && saw_newline)) {
    // Several top-level values (or a file that is not one JSON value): JSON lines, as HF's json builder reads them.
    out.spans = index_json_lines(path);
    out.json_lines = true;
    return out;
  }
  if (top == 0) throw Error("invalid JSON: the file is empty", path, "fix the file or use JSON lines");
  if (bad || !top_done)
    throw Error("invalid JSON: the file is not one complete JSON value", path, "fix the file or use JSON lines");
  if (top == '{' && record_depth == 0) out.spans = {{top_start, top_end - top_start, 0}};
  return out;
}

}  // namespace automodel::data
