// automodel_tokenizer_bench TOKENIZER_DIR LINES.jsonl [REPEATS=5]: single-thread encode throughput
// of our tokenizer over a file of JSON-string lines; prints one JSON object (best of REPEATS).
// bench/tokenizer_throughput.py runs it beside the `tokenizers` package on the same lines.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "components/tokenizer/tokenizer.h"
#include "core/error.h"
#include "core/threads.h"

int main(int argc, char** argv) {
  using namespace automodel;
  if (argc < 3) {
    std::fprintf(stderr, "usage: automodel_tokenizer_bench TOKENIZER_DIR LINES.jsonl [REPEATS]\n");
    return 2;
  }
  try {
    set_num_threads(1);
    tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_pretrained(argv[1]);
    std::ifstream in(argv[2]);
    AM_CHECK(in, "cannot open ", argv[2]);
    std::vector<std::string> lines;
    size_t bytes = 0;
    for (std::string line; std::getline(in, line);) {
      lines.push_back(nlohmann::json::parse(line).get<std::string>());
      bytes += lines.back().size();
    }
    const int repeats = argc > 3 ? std::stoi(argv[3]) : 5;
    double best = 1e30;
    size_t tokens = 0;
    for (int r = 0; r < repeats; ++r) {
      tokens = 0;
      auto t0 = std::chrono::steady_clock::now();
      for (const std::string& line : lines) tokens += tok.encode(line).ids.size();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("{\"bytes\": %zu, \"tokens\": %zu, \"seconds\": %.6f, \"mb_per_s\": %.3f}\n", bytes, tokens, best,
                double(bytes) / best / 1e6);
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
