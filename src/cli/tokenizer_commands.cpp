// `automodel tokenize`: text (or a file's contents) to token ids with a model's tokenizer.json. Files are read and
// encoded piece by piece, so memory stays bounded whatever their size.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "components/tokenizer/tokenizer.h"
#include "core/error.h"

namespace automodel::cli {

namespace {

const char* const kWhere = "automodel tokenize --file";

// An input file opened for reading, or an Error saying why it cannot be.
std::ifstream open_input(const std::string& file) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::file_status st = fs::status(file, ec);
  if (!fs::exists(st)) throw Error("no such file: " + file, kWhere, "check the path");
  if (fs::is_directory(st)) throw Error(file + " is a directory, not a file", kWhere, "give the path of a text file");
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error("cannot open " + file + ": " + std::strerror(errno), kWhere, "check the file's permissions");
  return in;
}

void write(const std::string& s) {
  if (std::fwrite(s.data(), 1, s.size(), stdout) != s.size())
    throw Error(std::string("cannot write the output: ") + std::strerror(errno), "automodel tokenize");
}

// --jsonl: one JSON string per line in, one JSON object per line out (ids, offsets, special_tokens_mask and the
// decoded text with and without special tokens). Lines are encoded in batches, so memory stays bounded.
int run_jsonl(const tokenizer::Tokenizer& tok, const std::string& file, bool add_special) {
  using nlohmann::json;
  std::ifstream f = open_input(file);
  constexpr size_t kBatchLines = 4096, kBatchBytes = size_t{8} << 20;
  std::vector<std::string> texts;
  size_t batch_bytes = 0;
  auto flush = [&] {
    std::string out;
    for (const auto& e : tok.encode_batch(texts, add_special)) {
      json j;
      j["ids"] = e.ids;
      j["offsets"] = e.offsets;
      j["special_tokens_mask"] = e.special_tokens_mask;
      j["decoded"] = tok.decode(e.ids, false);
      j["decoded_skip"] = tok.decode(e.ids, true);
      out += j.dump(-1, ' ', true, json::error_handler_t::replace);
      out += '\n';
    }
    write(out);
    texts.clear();
    batch_bytes = 0;
  };
  std::string line;
  for (size_t n = 1; std::getline(f, line); ++n) {
    if (line.empty()) continue;
    try {
      json j = json::parse(line);
      if (!j.is_string())
        throw Error("line " + std::to_string(n) + " is not a JSON string (got " + j.type_name() + ")",
                    file + ":" + std::to_string(n), "each line must be one JSON string");
      texts.push_back(j.get<std::string>());
    } catch (const json::exception& e) {
      throw Error(std::string("line is not a JSON string: ") + e.what(), file + ":" + std::to_string(n),
                  "each line must be one JSON string");
    }
    batch_bytes += texts.back().size();
    if (texts.size() >= kBatchLines || batch_bytes >= kBatchBytes) flush();
  }
  if (f.bad()) throw Error("cannot read " + file + ": " + std::strerror(errno), kWhere);
  if (!texts.empty()) flush();
  return 0;
}

}  // namespace

int run_tokenize(const Args& args) {
  std::string dir = args.str("tokenizer", "");
  std::string text = args.str("text", "");
  std::string file = args.str("file", "");
  bool no_special = args.flag("no-special");
  // --jsonl: --file holds one JSON string per line; prints one JSON object per line with ids, offsets,
  // special_tokens_mask and the decoded text (with and without special tokens). Used by the oracle tests.
  bool jsonl = args.flag("jsonl");
  args.reject_unused("tokenize");
  if (dir.empty()) throw Error("--tokenizer DIR is required", "automodel tokenize");
  if (args.options.count("text") == args.options.count("file"))
    throw Error("give exactly one of --text T or --file F", "automodel tokenize");
  if (jsonl && file.empty()) throw Error("--jsonl needs --file F", "automodel tokenize");
  if (!file.empty()) open_input(file);  // a bad path is reported before the tokenizer is loaded
  auto tok = tokenizer::Tokenizer::from_pretrained(dir);
  if (jsonl) return run_jsonl(tok, file, !no_special);
  write("[");
  bool first = true;
  auto print_ids = [&](const std::vector<int64_t>& ids) {
    std::string out;
    for (int64_t id : ids) {
      if (!first) out += ',';
      out += std::to_string(id);
      first = false;
    }
    write(out);
  };
  if (file.empty()) {
    print_ids(tok.encode(text, !no_special).ids);
  } else {
    std::ifstream in = open_input(file);
    tok.encode_stream(in, !no_special, print_ids, file);
  }
  write("]\n");
  return 0;
}

}  // namespace automodel::cli
