#include "components/data/file_formats.h"

#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "core/error.h"

namespace automodel::data {

namespace fs = std::filesystem;

namespace {

// Bumped when the cached form of a file changes, so older cache entries are not reused.
constexpr const char* kCacheFormat = "1";

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

enum class Compression { None, Gzip, Zstd };

// The compression suffix of `name` and the name without it.
std::pair<Compression, std::string> split_compression(const std::string& name) {
  const std::string l = lower(name);
  for (auto [suffix, kind] : {std::pair{".gz", Compression::Gzip}, std::pair{".zst", Compression::Zstd},
                              std::pair{".zstd", Compression::Zstd}})
    if (l.size() > std::strlen(suffix) && l.ends_with(suffix))
      return {kind, name.substr(0, name.size() - std::strlen(suffix))};
  return {Compression::None, name};
}

bool is_json_name(const std::string& name) {
  const std::string l = lower(name);
  return l.ends_with(".json") || l.ends_with(".jsonl") || l.ends_with(".ndjson");
}

bool is_lines_name(const std::string& name) {
  const std::string l = lower(name);
  return l.ends_with(".jsonl") || l.ends_with(".ndjson");
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// FNV-1a over the key: stable across builds and machines.
uint64_t fingerprint(const std::string& key) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
  return h;
}

void write_all(std::FILE* out, const void* data, size_t n, const std::string& out_path) {
  if (std::fwrite(data, 1, n, out) != n)
    throw Error("cannot write the dataset cache: " + std::string(std::strerror(errno)), out_path,
                "free disk space or point AUTOMODEL_CACHE_DIR at a writable directory with room");
}

void gunzip(const std::string& in_path, std::FILE* out, const std::string& out_path) {
  gzFile in = gzopen(in_path.c_str(), "rb");
  if (in == nullptr) throw Error("cannot open the gzip file", in_path, "check the path and its permissions");
  std::unique_ptr<gzFile_s, int (*)(gzFile)> guard(in, gzclose);
  std::vector<char> buf(size_t(1) << 20);
  while (true) {
    const int n = gzread(in, buf.data(), unsigned(buf.size()));
    int code = Z_OK;
    const char* msg = gzerror(in, &code);
    if (n < 0 || (n == 0 && code != Z_OK))
      throw Error(std::string("corrupt or truncated gzip data: ") + (msg ? msg : "unknown error"), in_path,
                  "re-create or re-download the file (gzip -t tests it)");
    if (n > 0 && gzdirect(in))
      throw Error("not gzip data (no gzip header)", in_path, "name the file for its format: .jsonl, not .jsonl.gz");
    if (n == 0) break;
    write_all(out, buf.data(), size_t(n), out_path);
  }
}

void unzstd(const std::string& in_path, std::FILE* out, const std::string& out_path) {
  FilePtr in(std::fopen(in_path.c_str(), "rb"));
  if (!in) throw Error("cannot open the zstd file", in_path, "check the path and its permissions");
  std::unique_ptr<ZSTD_DStream, size_t (*)(ZSTD_DStream*)> ds(ZSTD_createDStream(), ZSTD_freeDStream);
  ZSTD_initDStream(ds.get());
  std::vector<char> inbuf(ZSTD_DStreamInSize()), outbuf(ZSTD_DStreamOutSize());
  size_t last = 0;  // 0 once a frame is complete
  while (size_t n = std::fread(inbuf.data(), 1, inbuf.size(), in.get())) {
    ZSTD_inBuffer input{inbuf.data(), n, 0};
    while (input.pos < input.size) {
      ZSTD_outBuffer output{outbuf.data(), outbuf.size(), 0};
      last = ZSTD_decompressStream(ds.get(), &output, &input);
      if (ZSTD_isError(last))
        throw Error(std::string("corrupt zstd data: ") + ZSTD_getErrorName(last), in_path,
                    "re-create or re-download the file (zstd -t tests it)");
      write_all(out, outbuf.data(), output.pos, out_path);
    }
  }
  if (last != 0)
    throw Error("truncated zstd data: the file ends inside a frame", in_path, "re-create or re-download the file");
}

}  // namespace

bool is_dataset_file(const std::string& path) {
  const std::string name = fs::path(path).filename().string();
  return is_json_name(split_compression(name).second) || lower(name).ends_with(".parquet");
}

std::string dataset_cache_dir() {
  fs::path base;
  if (const char* d = std::getenv("AUTOMODEL_CACHE_DIR"); d && *d) {
    base = d;
  } else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) {
    base = fs::path(x) / "automodel";
  } else if (const char* h = std::getenv("HOME"); h && *h) {
    base = fs::path(h) / ".cache" / "automodel";
  } else {
    throw Error("no cache directory for converted dataset files (HOME is not set)", "AUTOMODEL_CACHE_DIR",
                "set AUTOMODEL_CACHE_DIR to a writable directory");
  }
  return (base / "datasets").string();
}

PlainFile plain_json_file(const std::string& path) {
  const std::string name = fs::path(path).filename().string();
  const auto [compression, inner] = split_compression(name);
  const bool parquet = lower(name).ends_with(".parquet");
  if (compression == Compression::None && !parquet) return {path, is_lines_name(name)};
  if (!parquet && !is_json_name(inner))
    throw Error("compressed dataset file of unknown format", path,
                "name it <name>.jsonl.gz / .jsonl.zst (JSON lines) or <name>.json.gz / .json.zst");

  std::error_code ec;
  const fs::path abs = fs::weakly_canonical(path, ec);
  const auto size = fs::file_size(path, ec);
  if (ec) throw Error("cannot read dataset file: " + ec.message(), path, "check the path and its permissions");
  const auto mtime = fs::last_write_time(path, ec).time_since_epoch().count();
  const uint64_t key = fingerprint(std::string(kCacheFormat) + "\n" + abs.string() + "\n" + std::to_string(size) +
                                   "\n" + std::to_string(mtime));
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(key));
  const std::string stem = parquet ? name.substr(0, name.size() - 8) + ".jsonl" : inner;
  const fs::path dir = dataset_cache_dir();
  const fs::path cached = dir / (std::string(hex) + "-" + stem);
  const bool lines = parquet || is_lines_name(inner);
  if (fs::exists(cached, ec)) return {cached.string(), lines};

  fs::create_directories(dir, ec);
  if (ec)
    throw Error("cannot create the dataset cache directory: " + ec.message(), dir.string(),
                "set AUTOMODEL_CACHE_DIR to a writable directory");
  // Written under a temporary name and renamed when complete: a reader never takes a partial file for the cache.
  const fs::path tmp = dir / ("." + cached.filename().string() + ".tmp-" + std::to_string(::getpid()));
  try {
    if (parquet) {
      parquet_to_json_lines(path, tmp.string());
    } else {
      FilePtr out(std::fopen(tmp.c_str(), "wb"));
      if (!out)
        throw Error("cannot write the dataset cache: " + std::string(std::strerror(errno)), tmp.string(),
                    "set AUTOMODEL_CACHE_DIR to a writable directory");
      if (compression == Compression::Gzip)
        gunzip(path, out.get(), tmp.string());
      else
        unzstd(path, out.get(), tmp.string());
      if (std::fflush(out.get()) != 0)
        throw Error("cannot write the dataset cache: " + std::string(std::strerror(errno)), tmp.string(),
                    "free disk space or point AUTOMODEL_CACHE_DIR elsewhere");
    }
    fs::rename(tmp, cached);
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
  return {cached.string(), lines};
}

}  // namespace automodel::data
