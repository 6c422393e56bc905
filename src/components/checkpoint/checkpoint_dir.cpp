#include "components/checkpoint/checkpoint_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <sstream>

#include "core/error.h"
#include "io/hf_dir.h"

namespace automodel::checkpoint {

namespace fs = std::filesystem;

namespace {

constexpr const char* kNemoIncompleteMarker = ".incomplete";

std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  std::ostringstream os;
  os << ::getpid() << '-' << counter++ << '-' << std::hex << rd();
  return os.str();
}

std::string errno_text() { return ::strerror(errno); }

// Flushes a file or directory to disk (directories: so that the names in them, i.e. renames, are durable).
void fsync_path(const fs::path& p, bool directory) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  if (fd < 0) throw Error("cannot open for flushing: " + errno_text(), p.string(), "check the file system");
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL)  // EINVAL: the file system does not support syncing this kind of file
    throw Error(std::string("cannot flush to disk: ") + ::strerror(err), p.string(), "check free space");
}

void fsync_tree(const fs::path& root) {
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_symlink()) continue;
    if (entry.is_regular_file())
      fsync_path(entry.path(), false);
    else if (entry.is_directory())
      fsync_path(entry.path(), true);
  }
  fsync_path(root, true);
}

// Moves a directory out of the way under a hidden name first, so that a crash half-way through removing it
// never leaves something that looks like a checkpoint.
void remove_dir_safely(const fs::path& dir) {
  const fs::path doomed = dir.parent_path() / ("." + dir.filename().string() + ".deleting-" + unique_suffix());
  std::error_code ec;
  fs::rename(dir, doomed, ec);
  fs::remove_all(ec ? dir : doomed, ec);
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::optional<std::string> read_pointer(const fs::path& root, const std::string& pointer) {
  const fs::path link = root / pointer, text = root / (pointer + ".txt");
  std::error_code ec;
  std::string raw;
  if (fs::is_symlink(fs::symlink_status(link, ec))) {
    raw = fs::read_symlink(link, ec).string();
  } else if (fs::is_regular_file(link, ec) || fs::is_regular_file(text, ec)) {
    std::ifstream in(fs::is_regular_file(link, ec) ? link : text);
    std::stringstream ss;
    ss << in.rdbuf();
    raw = trim(ss.str());
  }
  if (raw.empty()) return std::nullopt;
  fs::path target(raw);
  if (target.is_relative()) target = root / target;
  return target.lexically_normal().string();
}

bool has_pointer(const fs::path& root, const std::string& name) {
  std::error_code ec;
  const fs::path link = root / name;
  return fs::is_symlink(fs::symlink_status(link, ec)) || fs::is_regular_file(link, ec) ||
         fs::is_regular_file(root / (name + ".txt"), ec);
}

bool same_dir(const std::string& a, const std::string& b) {
  std::error_code ec1, ec2;
  fs::path ca = fs::weakly_canonical(a, ec1), cb = fs::weakly_canonical(b, ec2);
  if (ec1 || ec2) return fs::path(a).lexically_normal() == fs::path(b).lexically_normal();
  return ca == cb;
}

}  // namespace

std::string checkpoint_name(int64_t epoch, int64_t step) {
  return "epoch_" + std::to_string(epoch) + "_step_" + std::to_string(step);
}

std::optional<std::pair<int64_t, int64_t>> parse_checkpoint_name(const std::string& name_or_path) {
  static const std::regex pattern(R"(^epoch_(\d{1,18})_step_(\d{1,18})$)");
  std::string trimmed = name_or_path;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  const std::string name = fs::path(trimmed).filename().string();
  std::smatch m;
  if (!std::regex_match(name, m, pattern)) return std::nullopt;
  return std::make_pair(std::stoll(m[1].str()), std::stoll(m[2].str()));
}

bool is_complete_checkpoint(const std::string& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && fs::is_regular_file(fs::path(dir) / kCompleteMarker, ec) &&
         !fs::exists(fs::path(dir) / kNemoIncompleteMarker, ec);
}

std::vector<std::string> list_complete_checkpoints(const std::string& checkpoint_dir) {
  std::vector<std::pair<std::pair<int64_t, int64_t>, std::string>> found;  // ((step, epoch), path)
  std::error_code ec;
  if (!fs::is_directory(checkpoint_dir, ec)) return {};
  for (const auto& entry : fs::directory_iterator(checkpoint_dir, ec)) {
    auto parsed = parse_checkpoint_name(entry.path().filename().string());
    if (!parsed || entry.is_symlink() || !is_complete_checkpoint(entry.path().string())) continue;
    found.push_back({{parsed->second, parsed->first}, entry.path().string()});
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

std::string available_checkpoints(const std::string& checkpoint_dir) {
  std::error_code ec;
  if (!fs::is_directory(checkpoint_dir, ec)) return "(checkpoint_dir " + checkpoint_dir + " does not exist)";
  std::vector<std::string> all = list_complete_checkpoints(checkpoint_dir);
  if (all.empty()) return "(no complete checkpoints in " + checkpoint_dir + ")";
  std::string out = "complete checkpoints in " + checkpoint_dir + ": ";
  const size_t shown = std::min<size_t>(all.size(), 5);
  for (size_t i = all.size() - shown; i < all.size(); ++i)
    out += fs::path(all[i]).filename().string() + (i + 1 < all.size() ? ", " : "");
  if (all.size() > shown) out += " (and " + std::to_string(all.size() - shown) + " older)";
  return out;
}

std::optional<std::string> read_latest_pointer(const std::string& checkpoint_dir) {
  return read_pointer(checkpoint_dir, kLatestPointer);
}

void write_latest_pointer(const std::string& checkpoint_dir, const std::string& target_dir) {
  const fs::path root(checkpoint_dir);
  const fs::path relative =
      fs::absolute(target_dir).lexically_normal().lexically_relative(fs::absolute(root).lexically_normal());
  const fs::path link = root / kLatestPointer, text = root / (std::string(kLatestPointer) + ".txt");
  const fs::path tmp = root / ("." + std::string(kLatestPointer) + "." + unique_suffix() + ".tmp");
  std::error_code ec;
  if (::symlink(relative.c_str(), tmp.c_str()) == 0) {
    if (::rename(tmp.c_str(), link.c_str()) != 0) {
      const std::string err = errno_text();
      ::unlink(tmp.c_str());
      throw Error("cannot update the LATEST pointer: " + err, link.string(), "check the checkpoint directory");
    }
    fs::remove(text, ec);
  } else {
    // File systems without symlinks: NeMo's fallback text file.
    io::write_file_atomic(text.string(), relative.string() + "\n");
    if (fs::is_symlink(fs::symlink_status(link, ec))) fs::remove(link, ec);
  }
  fsync_path(root, true);
}

std::optional<std::string> resolve_restore_path(const std::string& checkpoint_dir, const std::string& restore_from) {
  std::string upper = restore_from;
  std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
  const bool latest = upper.empty() || upper == kLatestPointer;
  if (latest) {
    if (auto target = read_latest_pointer(checkpoint_dir); target && is_complete_checkpoint(*target)) return target;
    // No pointer, or it names a checkpoint that was removed or left incomplete: the newest complete one.
    std::vector<std::string> all = list_complete_checkpoints(checkpoint_dir);
    if (all.empty()) return std::nullopt;
    return all.back();
  }
  const bool bare_name = restore_from.find('/') == std::string::npos;
  std::string resolved = restore_from;
  if (bare_name) {
    const fs::path root(checkpoint_dir);
    if (!parse_checkpoint_name(restore_from) && has_pointer(root, restore_from)) {
      resolved = read_pointer(root, restore_from).value_or((root / restore_from).string());
    } else {
      resolved = (root / restore_from).string();
    }
  }
  const std::string where = "checkpoint.restore_from: '" + restore_from + "' -> " + resolved;
  std::error_code ec;
  if (!fs::exists(resolved, ec))
    throw Error("the checkpoint to restore from does not exist", where,
                "give LATEST, a checkpoint name or a path; " + available_checkpoints(checkpoint_dir));
  if (!is_complete_checkpoint(resolved))
    throw Error("the checkpoint to restore from is incomplete (no " + std::string(kCompleteMarker) +
                    " marker: an interrupted save, or not a checkpoint directory)",
                where, "resume from a complete checkpoint; " + available_checkpoints(checkpoint_dir));
  return resolved;
}

std::vector<std::string> prune_checkpoints(const std::string& checkpoint_dir, int64_t max_recent) {
  if (max_recent < 1)
    throw Error("max_recent_checkpoints must be >= 1, got " + std::to_string(max_recent),
                "checkpoint.max_recent_checkpoints", "leave it unset to keep every checkpoint");
  std::vector<std::string> all = list_complete_checkpoints(checkpoint_dir);
  const std::optional<std::string> latest = read_latest_pointer(checkpoint_dir);
  std::vector<std::string> removed;
  const size_t keep_from = all.size() > size_t(max_recent) ? all.size() - size_t(max_recent) : 0;
  for (size_t i = 0; i < keep_from; ++i) {
    if (latest && same_dir(all[i], *latest)) continue;
    remove_dir_safely(all[i]);
    removed.push_back(all[i]);
  }
  return removed;
}

namespace {

std::string utc_now() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

std::string read_fd(int fd) {
  std::string out;
  char buf[512];
  for (off_t at = 0;;) {
    const ssize_t n = ::pread(fd, buf, sizeof(buf), at);
    if (n <= 0) break;
    out.append(buf, size_t(n));
    at += n;
  }
  return out;
}

std::optional<LockHolder> parse_holder(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("pid") || !j["pid"].is_number_integer()) return std::nullopt;
  LockHolder h;
  h.pid = j["pid"].get<int64_t>();
  if (j.contains("host") && j["host"].is_string()) h.host = j["host"].get<std::string>();
  if (j.contains("started") && j["started"].is_string()) h.started = j["started"].get<std::string>();
  return h;
}

bool same_file(int fd, const std::string& path) {
  struct stat open_file {
  }, named{};
  return ::fstat(fd, &open_file) == 0 && ::stat(path.c_str(), &named) == 0 && open_file.st_dev == named.st_dev &&
         open_file.st_ino == named.st_ino;
}

Error held_error(const std::string& dir, const std::string& lock_path, const std::optional<LockHolder>& holder,
                 bool kernel_lock) {
  const std::string who = holder ? holder->describe() : "its lock file names no holder";
  std::string hint = holder ? "wait for that run to end or stop it (kill " + std::to_string(holder->pid) +
                                  (holder->host.empty() ? "" : " on " + holder->host) + ")"
                            : "wait for that run to end or stop it";
  hint += ", or give this run another checkpoint.checkpoint_dir";
  if (!kernel_lock)
    hint +=
        "; this file system has no file locks, so a run that died on another host leaves the lock behind: "
        "if none is running, remove " +
        lock_path;
  return Error("the checkpoint directory " + dir + " is in use by another training run (" + who + ")", lock_path, hint);
}

}  // namespace

std::string LockHolder::describe() const {
  std::string out = "pid " + std::to_string(pid);
  if (!host.empty()) out += " on host " + host;
  if (!started.empty()) out += ", started " + started;
  return out;
}

std::string this_host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "";
  return name;
}

std::optional<LockHolder> read_lock_holder(const std::string& checkpoint_dir) {
  std::ifstream in(fs::path(checkpoint_dir) / kLockFile);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_holder(ss.str());
}

bool lock_holder_may_be_alive(const LockHolder& holder, const std::string& this_host) {
  if (holder.host != this_host) return true;
  if (holder.pid <= 0 || holder.pid > std::numeric_limits<pid_t>::max()) return false;
  return ::kill(pid_t(holder.pid), 0) == 0 || errno == EPERM;
}

CheckpointDirLock::CheckpointDirLock(const std::string& checkpoint_dir)
    : dir_(checkpoint_dir), path_((fs::path(checkpoint_dir) / kLockFile).string()) {
  const char* writable_hint =
      "give checkpoint.checkpoint_dir a directory this user can create and write, or fix its permissions";
  std::error_code ec;
  fs::create_directories(checkpoint_dir, ec);
  if (ec) throw Error("cannot create the checkpoint directory: " + ec.message(), checkpoint_dir, writable_hint);
  if (!fs::is_directory(checkpoint_dir, ec))
    throw Error("the checkpoint directory is not a directory", checkpoint_dir, writable_hint);
  holder_ = {int64_t(::getpid()), this_host_name(), utc_now()};
  // The previous holder removes the file as it releases it: a lock taken on a file no longer at the path is retried.
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
      throw Error("cannot create the run's lock file in the checkpoint directory: " + errno_text(), path_,
                  writable_hint);
    bool kernel_lock = true;
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      if (err == EWOULDBLOCK) {
        const std::optional<LockHolder> holder = parse_holder(read_fd(fd));
        ::close(fd);
        throw held_error(checkpoint_dir, path_, holder, true);
      }
      if (err != ENOLCK && err != EOPNOTSUPP && err != ENOSYS) {
        ::close(fd);
        throw Error(std::string("cannot lock the checkpoint directory: ") + ::strerror(err), path_, writable_hint);
      }
      kernel_lock = false;
    }
    if (!same_file(fd, path_)) {
      ::close(fd);
      continue;
    }
    const std::optional<LockHolder> previous = parse_holder(read_fd(fd));
    if (previous && !kernel_lock && lock_holder_may_be_alive(*previous, holder_.host)) {
      ::close(fd);
      throw held_error(checkpoint_dir, path_, previous, false);
    }
    taken_over_ = previous;
    const std::string text =
        nlohmann::json{{"pid", holder_.pid}, {"host", holder_.host}, {"started", holder_.started}}.dump() + "\n";
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, text.data(), text.size(), 0) != ssize_t(text.size())) {
      const std::string err = errno_text();
      ::close(fd);
      throw Error("cannot write the run's lock file: " + err, path_, writable_hint);
    }
    fd_ = fd;
    return;
  }
  throw Error("cannot take the checkpoint directory's lock: its lock file keeps being replaced", path_,
              "another program is creating and removing " + std::string(kLockFile) + " there; stop it");
}

CheckpointDirLock::~CheckpointDirLock() {
  if (fd_ < 0) return;
  if (same_file(fd_, path_)) ::unlink(path_.c_str());
  ::close(fd_);
}

CheckpointStage::CheckpointStage(const std::string& checkpoint_dir, const std::string& name)
    : checkpoint_dir_(checkpoint_dir), name_(name) {
  if (name.empty() || name.find('/') != std::string::npos || name[0] == '.')
    throw Error("invalid checkpoint name '" + name + "'", checkpoint_dir, "use checkpoint_name(epoch, step)");
  const fs::path root(checkpoint_dir);
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) throw Error("cannot create the checkpoint directory: " + ec.message(), checkpoint_dir, "check permissions");
  const std::string prefix = "." + name + ".staging-";
  for (const auto& entry : fs::directory_iterator(root, ec))
    if (entry.path().filename().string().rfind(prefix, 0) == 0) fs::remove_all(entry.path(), ec);
  staging_ = (root / (prefix + unique_suffix())).string();
  final_ = (root / name).string();
  fs::create_directory(staging_, ec);
  if (ec) throw Error("cannot create the staging directory: " + ec.message(), staging_, "check permissions");
}

CheckpointStage::~CheckpointStage() {
  if (published_) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);
}

void CheckpointStage::publish(std::optional<int64_t> max_recent) {
  if (published_) throw Error("checkpoint already published", final_, "create a new CheckpointStage per save");
  fsync_tree(staging_);
  io::write_file_atomic((fs::path(staging_) / kCompleteMarker).string(), name_ + "\n");
  fsync_path(staging_, true);
  std::error_code ec;
  if (fs::exists(fs::symlink_status(final_, ec))) {
    // Swap the new checkpoint in with one atomic exchange so that the name always holds a complete checkpoint;
    // the old one is then at the staging name and is removed.
    if (::renameat2(AT_FDCWD, staging_.c_str(), AT_FDCWD, final_.c_str(), RENAME_EXCHANGE) != 0) {
      if (errno != EINVAL && errno != ENOSYS)
        throw Error("cannot replace the existing checkpoint: " + errno_text(), final_, "check permissions");
      const fs::path aside = fs::path(checkpoint_dir_) / ("." + name_ + ".replaced-" + unique_suffix());
      fs::rename(final_, aside);
      fs::rename(staging_, final_);
      fs::remove_all(aside, ec);
    } else {
      fs::remove_all(staging_, ec);
    }
  } else if (::rename(staging_.c_str(), final_.c_str()) != 0) {
    throw Error("cannot publish the checkpoint: " + errno_text(), staging_ + " -> " + final_, "check permissions");
  }
  published_ = true;
  fsync_path(checkpoint_dir_, true);
  write_latest_pointer(checkpoint_dir_, final_);
  if (max_recent) prune_checkpoints(checkpoint_dir_, *max_recent);
}

}  // namespace automodel::checkpoint
