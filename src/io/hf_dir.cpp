#include "io/hf_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace fs = std::filesystem;

namespace automodel::io {

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

std::string trim(std::string s) {
  auto ws = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!s.empty() && ws(s.back())) s.pop_back();
  size_t i = 0;
  while (i < s.size() && ws(s[i])) ++i;
  return s.substr(i);
}

// A hub id is "name" or "org/name" made of letters, digits, '-', '_', '.'; no "..", no leading/trailing '/'.
bool looks_like_hub_id(const std::string& s) {
  if (s.empty() || s.find("..") != std::string::npos || s.front() == '/' || s.back() == '/') return false;
  if (std::count(s.begin(), s.end(), '/') > 1) return false;
  return std::all_of(s.begin(), s.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '/'; });
}

}  // namespace

std::vector<std::string> hub_cache_dirs() {
  std::vector<std::string> dirs;
  auto add = [&](const std::string& d) {
    if (!d.empty() && std::find(dirs.begin(), dirs.end(), d) == dirs.end()) dirs.push_back(d);
  };
  add(env("HF_HUB_CACHE"));
  add(env("HUGGINGFACE_HUB_CACHE"));
  if (!env("HF_HOME").empty()) add((fs::path(env("HF_HOME")) / "hub").string());
  if (!env("XDG_CACHE_HOME").empty()) add((fs::path(env("XDG_CACHE_HOME")) / "huggingface" / "hub").string());
  if (!env("HOME").empty()) add((fs::path(env("HOME")) / ".cache" / "huggingface" / "hub").string());
  return dirs;
}

std::string resolve_model_dir(const std::string& name_or_path, const std::string& revision) {
  if (is_dir(name_or_path)) return name_or_path;
  std::vector<std::string> looked;
  looked.push_back(name_or_path + " (as a local directory: not found)");
  if (looks_like_hub_id(name_or_path)) {
    std::string folder = "models--";
    for (char c : name_or_path) folder += (c == '/') ? std::string("--") : std::string(1, c);
    for (const std::string& cache : hub_cache_dirs()) {
      fs::path root = fs::path(cache) / folder;
      if (!is_dir(root)) {
        looked.push_back(root.string() + " (not found)");
        continue;
      }
      fs::path ref = root / "refs" / revision;
      std::error_code ec;
      if (fs::is_regular_file(ref, ec)) {
        std::ifstream in(ref);
        std::stringstream ss;
        ss << in.rdbuf();
        std::string commit = trim(ss.str());
        fs::path snap = root / "snapshots" / commit;
        if (!commit.empty() && is_dir(snap)) return snap.string();
        looked.push_back(ref.string() + " -> " + (commit.empty() ? "(empty)" : commit) + ", but " + snap.string() +
                         " does not exist");
        continue;
      }
      fs::path direct = root / "snapshots" / revision;
      if (is_dir(direct)) return direct.string();
      std::vector<fs::path> snaps;
      if (is_dir(root / "snapshots"))
        for (const auto& e : fs::directory_iterator(root / "snapshots", ec))
          if (e.is_directory(ec)) snaps.push_back(e.path());
      if (snaps.size() == 1 && revision == "main") return snaps[0].string();
      looked.push_back(root.string() + " (no refs/" + revision + "; " + std::to_string(snaps.size()) +
                       " snapshot(s) in snapshots/" + (snaps.size() > 1 ? ", ambiguous" : "") + ")");
    }
    if (hub_cache_dirs().empty()) looked.push_back("(no hub cache: HF_HUB_CACHE, HF_HOME and HOME are all unset)");
  } else {
    looked.push_back("(not a hub id of the form org/name, so no hub cache lookup)");
  }
  std::string msg = "cannot find model '" + name_or_path + "'; looked in:";
  for (const std::string& l : looked) msg += "\n    " + l;
  throw Error(msg, "resolve_model_dir",
              "pass an existing model directory, or download the model into the Hugging Face cache first (e.g. "
              "`hf download " +
                  name_or_path + "`): automodel has no network download yet");
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open JSON file " + path + ": " + std::strerror(errno), path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    size_t byte = std::min<size_t>(e.byte > 0 ? e.byte - 1 : 0, text.size());
    size_t line = 1 + size_t(std::count(text.begin(), text.begin() + byte, '\n'));
    size_t nl = text.rfind('\n', byte == 0 ? 0 : byte - 1);
    size_t col = (nl == std::string::npos || byte == 0) ? byte + 1 : byte - nl;
    std::string what = e.what();
    // nlohmann's message: "[json.exception.parse_error.101] parse error at line L, column C: <reason>"
    size_t colon = what.find(": ");
    std::string reason = colon == std::string::npos ? what : what.substr(colon + 2);
    throw Error("invalid JSON in " + path + " at line " + std::to_string(line) + ", column " + std::to_string(col) +
                    ": " + reason,
                path + ":" + std::to_string(line) + ":" + std::to_string(col), "fix the JSON syntax there");
  } catch (const nlohmann::json::exception& e) {  // e.g. out_of_range for a number beyond double (1e999)
    throw Error("invalid JSON in " + path + ": " + e.what(), path, "fix the value (numbers must fit a double)");
  }
}

void write_file_atomic(const std::string& path, const std::function<void(const ByteSink&)>& produce) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    throw Error("cannot create " + tmp + ": " + std::strerror(errno), path,
                "check that the directory exists and is writable");
  auto fail = [&](const std::string& what, int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(what + ": " + std::strerror(err), path, "check free disk space and permissions");
  };
  ByteSink sink = [&](const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t w = ::write(fd, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail("cannot write " + tmp, w < 0 ? errno : EIO);
      p += w;
      n -= size_t(w);
    }
  };
  try {
    produce(sink);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::fsync(fd) != 0) fail("cannot flush " + tmp, errno);
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw Error("cannot close " + tmp + ": " + std::strerror(err), path);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw Error("cannot rename " + tmp + " to " + path + ": " + std::strerror(err), path);
  }
}

void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, [&](const ByteSink& sink) { sink(text.data(), text.size()); });
}

}  // namespace automodel::io
