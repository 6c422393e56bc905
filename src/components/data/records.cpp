#include "components/data/records.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

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

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open dataset file", path.string(), "check the path and its permissions");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void append_object(std::vector<ojson>& out, ojson value, const std::string& where) {
  if (!value.is_object())
    throw Error(std::string("dataset record is a JSON ") + value.type_name() + ", not an object", where,
                "each record must be a JSON object such as {\"question\": ..., \"answer\": ...}");
  out.push_back(std::move(value));
}

void read_json_lines(const std::string& text, const fs::path& path, std::vector<ojson>& out) {
  std::istringstream lines(text);
  std::string line;
  size_t line_no = 0;
  while (std::getline(lines, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r\n") == std::string::npos) continue;
    std::string where = path.string() + ":" + std::to_string(line_no);
    ojson value;
    try {
      value = ojson::parse(line);
    } catch (const ojson::parse_error& e) {
      throw Error(std::string("invalid JSON line: ") + e.what(), where, "each line of a JSON-lines file is one object");
    }
    append_object(out, std::move(value), where);
  }
}

void read_file(const fs::path& path, std::vector<ojson>& out) {
  if (!fs::exists(path))
    throw Error("dataset file not found", path.string(), "check `path` (a local .json/.jsonl file or directory)");
  std::string text = read_text(path);
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".jsonl" || ext == ".ndjson") return read_json_lines(text, path, out);
  ojson whole;
  try {
    whole = ojson::parse(text);
  } catch (const ojson::parse_error& e) {
    // HF's json builder also reads JSON-lines content from a .json file.
    size_t lines = std::count(text.begin(), text.end(), '\n');
    if (lines >= 1) return read_json_lines(text, path, out);
    throw Error(std::string("invalid JSON: ") + e.what(), path.string(), "fix the file or use JSON lines");
  }
  if (whole.is_object() && whole.contains("data") && whole["data"].is_array()) whole = std::move(whole["data"]);
  if (whole.is_array()) {
    for (size_t i = 0; i < whole.size(); ++i)
      append_object(out, std::move(whole[i]), path.string() + " [record " + std::to_string(i) + "]");
  } else {
    append_object(out, std::move(whole), path.string());
  }
}

bool is_json_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".json" || ext == ".jsonl" || ext == ".ndjson";
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
    (is_json_file(p) ? json_files : other_files).push_back(fs::relative(p, dir));
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
    throw Error("no .json/.jsonl file for split '" + split + "' in dataset directory (found: " + found + ")", dir,
                "name the file for its split (e.g. " + split +
                    ".jsonl), point `path` at the file itself, or "
                    "convert other formats (parquet, csv) to JSON lines");
  }
  return picked;
}

std::vector<nlohmann::ordered_json> load_records(const std::string& path, const std::string& split) {
  if (path.empty())
    throw Error("no dataset path given", "dataset.path", "set it to a local .json/.jsonl file or a directory of them");
  std::vector<SplitPart> parts = parse_split(split.empty() ? std::string("train") : split);
  if (!fs::exists(path))
    throw Error("dataset path not found", path,
                "give a local .json/.jsonl file or a directory of them (hub dataset ids must be downloaded first)");
  const bool is_dir = fs::is_directory(path);
  std::vector<ojson> out;
  for (const SplitPart& part : parts) {
    std::vector<ojson> rows;
    if (is_dir) {
      for (const std::string& file : split_files(path, part.name)) read_file(file, rows);
    } else {
      read_file(path, rows);
    }
    auto [from, to] = slice_bounds(part, rows.size());
    for (size_t i = from; i < to; ++i) out.push_back(std::move(rows[i]));
  }
  return out;
}

}  // namespace automodel::data
