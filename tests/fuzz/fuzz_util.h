#pragma once
// What every fuzz target shares: a scratch directory for the parsers that read files, and the rule that an
// automodel::Error is a correct answer to bad input. Any other exception escapes LLVMFuzzerTestOneInput, terminates
// the process, and libFuzzer saves the input as a crash (as it does for signals, sanitizer reports, timeouts and
// inputs that need more memory than -rss_limit_mb).
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "core/error.h"

namespace automodel::fuzz {

// This process's scratch directory, removed at exit (a crash leaves it in the temp dir).
inline const std::filesystem::path& scratch_dir() {
  struct Dir {
    std::filesystem::path path;
    Dir() {
      path = std::filesystem::temp_directory_path() / ("automodel-fuzz-" + std::to_string(::getpid()));
      std::filesystem::create_directories(path);
    }
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static Dir dir;
  return dir.path;
}

inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The repository's files (assets/tiny-llama, ...), for targets that need a fixed valid part beside the fuzzed one.
inline std::filesystem::path source_path(const std::string& relative) {
  return std::filesystem::path(AUTOMODEL_SOURCE_DIR) / relative;
}

// Runs one parse; an automodel::Error is the expected answer to bad input.
template <class F>
void accept_errors(F&& parse) {
  try {
    parse();
  } catch (const Error&) {
  }
}

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

}  // namespace automodel::fuzz
