#include "cli/args.h"

#include <algorithm>

#include "core/error.h"

namespace automodel::cli {

Args parse_args(const std::vector<std::string>& argv) {
  Args a;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& s = argv[i];
    if (s.rfind("--", 0) != 0) {
      a.positional.push_back(s);
      continue;
    }
    std::string body = s.substr(2);
    size_t eq = body.find('=');
    if (eq != std::string::npos) {
      a.options[body.substr(0, eq)] = body.substr(eq + 1);
    } else if (i + 1 < argv.size() && argv[i + 1].rfind("--", 0) != 0) {
      a.options[body] = argv[++i];
    } else {
      a.options[body] = "true";
    }
  }
  return a;
}

bool Args::flag(const std::string& name) const {
  auto it = options.find(name);
  if (it == options.end()) return false;
  used[name] = true;
  if (it->second == "true" || it->second == "1") return true;
  if (it->second == "false" || it->second == "0") return false;
  throw Error("--" + name + " takes no value or true/false, got '" + it->second + "'", "command line");
}

std::string Args::str(const std::string& name, const std::string& fallback) const {
  auto it = options.find(name);
  if (it == options.end()) return fallback;
  used[name] = true;
  return it->second;
}

long long Args::integer(const std::string& name, long long fallback) const {
  std::string v = str(name, "");
  if (v.empty()) return fallback;
  try {
    size_t pos = 0;
    long long x = std::stoll(v, &pos);
    if (pos == v.size()) return x;
  } catch (...) {
  }
  throw Error("--" + name + " needs an integer, got '" + v + "'", "command line");
}

double Args::number(const std::string& name, double fallback) const {
  std::string v = str(name, "");
  if (v.empty()) return fallback;
  try {
    size_t pos = 0;
    double x = std::stod(v, &pos);
    if (pos == v.size()) return x;
  } catch (...) {
  }
  throw Error("--" + name + " needs a number, got '" + v + "'", "command line");
}

int Args::threads() const {
  if (!options.count("threads")) return 0;
  return parse_threads(str("threads", ""));
}

int parse_threads(const std::string& text) {
  const bool digits = !text.empty() && text.size() <= 9 &&
                      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  const long n = digits ? std::stol(text) : 0;
  if (n < 1 || n > kMaxThreads)
    throw Error("--threads needs a positive integer up to " + std::to_string(kMaxThreads) + ", got '" + text + "'",
                "command line", "--threads N runs N threads; leave it out for the machine's core count");
  return int(n);
}

void Args::reject_unused(const std::string& command) const {
  for (auto& [name, value] : options)
    if (!used.count(name))
      throw Error("unknown option --" + name + " for `automodel " + command + "`", "command line",
                  "run `automodel --help` for the options");
  if (!positional.empty())
    throw Error("unexpected argument '" + positional[0] + "' for `automodel " + command + "`", "command line");
}

}  // namespace automodel::cli
