#include "components/data/records.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "components/data/file_formats.h"
#include "components/data/json_index.h"
#include "core/error.h"

namespace automodel::data {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

const char* kSplitHint =
    "write a split as HF datasets does: train, validation, train[:100], train[10:20], train[-50:], "
    "train[:10%], train+validation";

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

std::optional<int64_t> parse_bound(const std::string& raw, bool& percent, const std::string& split) {
  percent = false;
  std::string text = trim(raw);
  if (text.empty()) return std::nullopt;
  std::string digits = text;
  if (digits.back() == '%') {
    percent = true;
    digits.pop_back();
  }
  size_t first = digits.size() > 1 && digits[0] == '-' ? 1 : 0;
  bool ok = digits.size() > first && digits.size() - first <= 18 &&
            std::all_of(digits.begin() + first, digits.end(), [](unsigned char c) { return std::isdigit(c); });
  if (!ok) throw Error("bad split slice bound '" + text + "' in split '" + split + "'", "split", kSplitHint);
  return std::stoll(digits);
}

// HF datasets' split-name keywords for files in a dataset directory.
std::vector<std::string> split_keywords(const std::string& split) {
  static const std::map<std::string, std::vector<std::string>> known = {
      {"train", {"train", "training"}},
      {"validation", {"validation", "valid", "dev", "val"}},
      {"test", {"test", "testing", "eval", "evaluation"}},
  };
  auto it = known.find(split);
  if (it != known.end()) return it->second;
  return {split};
}

// True when a path component (split at - . _ space and digits) is one of the keywords.
bool names_split(const fs::path& rel, const std::vector<std::string>& keywords) {
  for (const auto& component : rel) {
    std::string s = component.string();
    std::string word;
    auto flush = [&]() {
      bool hit = std::find(keywords.begin(), keywords.end(), word) != keywords.end();
      word.clear();
      return hit;
    };
    for (char c : s) {
      if (std::isalpha(static_cast<unsigned char>(c))) {
        word += char(std::tolower(static_cast<unsigned char>(c)));
      } else if (flush()) {
        return true;
      }
    }
    if (flush()) return true;
  }
  return false;
}

}  // namespace

std::vector<SplitPart> parse_split(const std::string& split) {
  auto bad = [&]() { return Error("bad split '" + split + "'", "split", kSplitHint); };
  std::vector<SplitPart> parts;
  size_t start = 0;
  while (true) {
    size_t plus = split.find('+', start);
    std::string piece = trim(split.substr(start, plus == std::string::npos ? std::string::npos : plus - start));
    SplitPart part;
    size_t open = piece.find('[');
    part.name = trim(piece.substr(0, open));
    if (part.name.empty() ||
        !std::all_of(part.name.begin(), part.name.end(), [](unsigned char c) { return std::isalnum(c) || c == '_'; }))
      throw bad();
    if (open != std::string::npos) {
      std::string inner = piece.substr(open + 1);
      if (inner.empty() || inner.back() != ']') throw bad();
      inner.pop_back();
      size_t colon = inner.find(':');
      if (colon == std::string::npos || inner.find_first_of(":[]", colon + 1) != std::string::npos) throw bad();
      part.from = parse_bound(inner.substr(0, colon), part.from_percent, split);
      part.to = parse_bound(inner.substr(colon + 1), part.to_percent, split);
    }
    parts.push_back(part);
    if (plus == std::string::npos) break;
    start = plus + 1;
  }
  return parts;
}

std::pair<size_t, size_t> slice_bounds(const SplitPart& part, size_t num_rows) {
  const int64_t n = int64_t(num_rows);
  auto resolve = [n](std::optional<int64_t> bound, bool percent, int64_t fallback) {
    if (!bound) return fallback;
    int64_t v = *bound;
    // HF rounds percent boundaries to the closest row (Python round: half to even).
    if (percent) v = int64_t(std::nearbyint(double(v) * double(n) / 100.0));
    if (v < 0) v = std::max<int64_t>(n + v, 0);
    return std::min(v, n);
  };
  int64_t from = resolve(part.from, part.from_percent, 0);
  int64_t to = resolve(part.to, part.to_percent, n);
  if (to < from) to = from;
  return {size_t(from), size_t(to)};
}

std::vector<std::string> split_files(const std::string& dir, const std::string& split) {
  std::vector<fs::path> json_files, other_files;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied);
       it != fs::recursive_directory_iterator(); ++it) {
    if (it.depth() > 3) it.disable_recursion_pending();
    const fs::path& p = it->path();
    std::string name = p.filename().string();
    if (!name.empty() && name[0] == '.') {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file()) continue;
    (is_dataset_file(p.string()) ? json_files : other_files).push_back(fs::relative(p, dir));
  }
  std::sort(json_files.begin(), json_files.end());
  std::vector<std::string> picked;
  auto keywords = split_keywords(split);
  for (const auto& rel : json_files)
    if (names_split(rel, keywords)) picked.push_back((fs::path(dir) / rel).string());
  if (picked.empty() && split == "train") {
    // As HF does: a directory whose files name no split at all is one "train" split.
    bool any_named = false;
    for (const auto& rel : json_files)
      for (const char* s : {"train", "validation", "test"})
        any_named = any_named || names_split(rel, split_keywords(s));
    if (!any_named)
      for (const auto& rel : json_files) picked.push_back((fs::path(dir) / rel).string());
  }
  if (picked.empty()) {
    std::string found;
    size_t shown = 0;
    for (const auto* list : {&json_files, &other_files})
      for (const auto& rel : *list)
        if (shown++ < 12) found += (found.empty() ? "" : ", ") + rel.string();
    if (found.empty()) found = "nothing";
    throw Error("no .json/.jsonl/.parquet file for split '" + split + "' in dataset directory (found: " + found + ")",
                dir,
                "name the file for its split (e.g. " + split +
                    ".jsonl), point `path` at the file itself, or "
                    "convert other formats (csv, arrow) to JSON lines");
  }
  return picked;
}

RecordSource::RecordSource(const std::string& path, const std::string& split) {
  if (path.empty())
    throw Error("no dataset path given", "dataset.path", "set it to a local .json/.jsonl file or a directory of them");
  std::vector<SplitPart> parts = parse_split(split.empty() ? std::string("train") : split);
  if (!fs::exists(path))
    throw Error("dataset path not found", path,
                "give a local .json/.jsonl/.parquet file or a directory of them (hub dataset ids must be downloaded "
                "first)");
  const bool is_dir = fs::is_directory(path);
  std::map<std::string, std::pair<uint32_t, std::vector<RecordSpan>>> indexed;  // a file named by two parts once
  auto index_file = [&](const std::string& file) -> const std::pair<uint32_t, std::vector<RecordSpan>>& {
    if (auto it = indexed.find(file); it != indexed.end()) return it->second;
    PlainFile plain = plain_json_file(file);
    File f{file, plain.path, -1, plain.json_lines};
    std::vector<RecordSpan> spans;
    if (plain.json_lines) {
      spans = index_json_lines(plain.path);
    } else {
      JsonFileIndex index = index_json_file(plain.path);
      spans = std::move(index.spans);
      f.json_lines = index.json_lines;
    }
    f.fd = ::open(plain.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (f.fd < 0)
      throw Error("cannot open dataset file: " + std::string(std::strerror(errno)), plain.path,
                  "check the path and its permissions");
    files_.push_back(std::move(f));
    return indexed[file] = {uint32_t(files_.size() - 1), std::move(spans)};
  };
  for (const SplitPart& part : parts) {
    std::vector<Record> rows;
    for (const std::string& file : is_dir ? split_files(path, part.name) : std::vector<std::string>{path}) {
      const auto& [id, spans] = index_file(file);
      for (const RecordSpan& s : spans) rows.push_back({s.offset, s.length, s.label, id});
    }
    auto [from, to] = slice_bounds(part, rows.size());
    records_.insert(records_.end(), rows.begin() + long(from), rows.begin() + long(to));
  }
}

RecordSource::~RecordSource() {
  for (const File& f : files_)
    if (f.fd >= 0) ::close(f.fd);
}

std::string RecordSource::where(size_t i) const {
  const Record& r = records_.at(i);
  const File& f = files_[r.file];
  return f.path + (f.json_lines ? ":" + std::to_string(r.label) : "") + " [record " + std::to_string(i) + "]";
}

ojson RecordSource::at(size_t i) const {
  const Record& r = records_.at(i);
  const File& f = files_[r.file];
  std::string text(r.length, '\0');
  for (uint64_t done = 0; done < r.length;) {
    const ssize_t n = ::pread(f.fd, text.data() + done, r.length - done, off_t(r.offset + done));
    if (n <= 0)
      throw Error(n == 0 ? "dataset file changed while reading it (it ended early)"
                         : "cannot read dataset file: " + std::string(std::strerror(errno)),
                  where(i), "do not modify a dataset file while a run reads it");
    done += uint64_t(n);
  }
  ojson value;
  try {
    value = ojson::parse(text);
  } catch (const ojson::exception& e) {  // parse_error, or out_of_range for a number beyond double
    throw Error(std::string("invalid JSON record: ") + e.what(), where(i),
                f.json_lines ? "each line of a JSON-lines file is one object" : "fix the record");
  }
  if (!value.is_object())
    throw Error(std::string("dataset record is a JSON ") + value.type_name() + ", not an object", where(i),
                "each record must be a JSON object such as {\"question\": ..., \"answer\": ...}");
  return value;
}

std::vector<ojson> load_records(const std::string& path, const std::string& split) {
  RecordSource source(path, split);
  std::vector<ojson> out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) out.push_back(source.at(i));
  return out;
}

}  // namespace automodel::data
