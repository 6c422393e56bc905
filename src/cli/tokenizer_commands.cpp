// `automodel tokenize`: text (or a file's contents) to token ids with a model's tokenizer.json.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "components/tokenizer/tokenizer.h"
#include "core/error.h"

namespace automodel::cli {

namespace {

int run_jsonl(const std::string& dir, const std::string& file, bool add_special) {
  using nlohmann::json;
  std::ifstream f(file, std::ios::binary);
  if (!f) throw Error("cannot open file", file);
  std::vector<std::string> texts;
  std::string line;
  for (size_t n = 1; std::getline(f, line); ++n) {
    if (line.empty()) continue;
    try {
      texts.push_back(json::parse(line).get<std::string>());
    } catch (const json::exception& e) {
      throw Error(std::string("line is not a JSON string: ") + e.what(), file + ":" + std::to_string(n));
    }
  }
  auto tok = tokenizer::Tokenizer::from_pretrained(dir);
  auto encs = tok.encode_batch(texts, add_special);
  std::string out;
  for (const auto& e : encs) {
    json j;
    j["ids"] = e.ids;
    j["offsets"] = e.offsets;
    j["special_tokens_mask"] = e.special_tokens_mask;
    j["decoded"] = tok.decode(e.ids, false);
    j["decoded_skip"] = tok.decode(e.ids, true);
    out += j.dump(-1, ' ', true, json::error_handler_t::replace);
    out += '\n';
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
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
  if (jsonl) {
    if (file.empty()) throw Error("--jsonl needs --file F", "automodel tokenize");
    return run_jsonl(dir, file, !no_special);
  }
  if (!file.empty()) {
    std::ifstream f(file, std::ios::binary);
    if (!f) throw Error("cannot open file", file);
    text.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  auto tok = tokenizer::Tokenizer::from_pretrained(dir);
  auto enc = tok.encode(text, !no_special);
  std::string out = "[";
  for (size_t i = 0; i < enc.ids.size(); ++i) out += (i ? "," : "") + std::to_string(enc.ids[i]);
  out += "]\n";
  std::fputs(out.c_str(), stdout);
  return 0;
}

}  // namespace automodel::cli
