#pragma once
// `--name value`, `--name=value` and bare `--flag` options of a subcommand.
#include <map>
#include <string>
#include <vector>

namespace automodel::cli {

struct Args {
  std::map<std::string, std::string> options;  // name without dashes -> value ("true" for bare flags)
  std::vector<std::string> positional;
  mutable std::map<std::string, bool> used;

  bool flag(const std::string& name) const;
  std::string str(const std::string& name, const std::string& fallback) const;
  long long integer(const std::string& name, long long fallback) const;
  double number(const std::string& name, double fallback) const;
  // --threads N (parse_threads); 0 when not given.
  int threads() const;
  // An Error naming the first option no getter asked for (a typo would otherwise be ignored).
  void reject_unused(const std::string& command) const;
};

Args parse_args(const std::vector<std::string>& argv);

// The one --threads rule of every command: a positive integer up to kMaxThreads (libgomp aborts when it cannot start
// the threads asked for). An Error otherwise.
inline constexpr int kMaxThreads = 4096;
int parse_threads(const std::string& text);

}  // namespace automodel::cli
