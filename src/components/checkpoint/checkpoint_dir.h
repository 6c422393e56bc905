#pragma once
// Checkpoint directories as NeMo Automodel lays them out: <checkpoint_dir>/epoch_<E>_step_<S>/, a LATEST pointer
// next to them, and restore_from resolution. A checkpoint is written into a hidden staging directory, marked
// complete, and published by one rename, so a reader never takes a half-written checkpoint for a complete one.
//
// Complete: a directory named epoch_<E>_step_<S> (not a symlink) that holds the marker file kCompleteMarker
// (written and flushed last, before the publishing rename) and not NeMo's ".incomplete" marker.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace automodel::checkpoint {

inline constexpr const char* kCompleteMarker = ".automodel_complete";
inline constexpr const char* kLatestPointer = "LATEST";

// "epoch_E_step_S".
std::string checkpoint_name(int64_t epoch, int64_t step);
// The (epoch, step) of a directory named epoch_<E>_step_<S> (path or bare name); nullopt for any other name.
std::optional<std::pair<int64_t, int64_t>> parse_checkpoint_name(const std::string& name_or_path);
bool is_complete_checkpoint(const std::string& dir);
// Complete checkpoints under checkpoint_dir (full paths), oldest first: by step, then epoch. Empty when the
// directory does not exist.
std::vector<std::string> list_complete_checkpoints(const std::string& checkpoint_dir);
// "complete checkpoints in DIR: epoch_0_step_9, epoch_0_step_19 (and 3 older)" (the newest five), for hints.
std::string available_checkpoints(const std::string& checkpoint_dir);

// The directory the LATEST pointer names (a relative symlink, a text file LATEST or NeMo's fallback LATEST.txt),
// whether or not it exists; nullopt when there is no pointer.
std::optional<std::string> read_latest_pointer(const std::string& checkpoint_dir);
// Points LATEST at target_dir (a relative symlink, as NeMo writes it; a LATEST.txt text file where symlinks are
// not supported), replaced atomically.
void write_latest_pointer(const std::string& checkpoint_dir, const std::string& target_dir);

// restore_from -> the checkpoint directory to resume from:
//   "LATEST" (any case) or "": the LATEST pointer when it names a complete checkpoint, else the complete checkpoint
//     with the highest step; nullopt when there is none yet (a fresh start).
//   a bare name (no '/'): <checkpoint_dir>/<name>, or the target of a pointer of that name (e.g. LOWEST_VAL).
//   anything else: a path, taken as given.
// Throws automodel::Error (listing the checkpoints there are) when the target does not exist or is incomplete.
std::optional<std::string> resolve_restore_path(const std::string& checkpoint_dir, const std::string& restore_from);

// Keeps the newest max_recent complete checkpoints (and the one LATEST names); removes older complete ones,
// oldest step first. Incomplete and staging directories are left alone. Returns the removed paths.
std::vector<std::string> prune_checkpoints(const std::string& checkpoint_dir, int64_t max_recent);

// One training run's exclusive hold on its checkpoint directory for the run's lifetime: two runs writing into one
// directory would remove each other's staging directories and move LATEST backwards.
//
// The lock file <checkpoint_dir>/.automodel.lock names the holder (pid, host, start time) and is locked with
// flock(2), which the kernel releases when the holder dies, however it dies; the file a dead run leaves behind is
// then taken over. Where the file system has no locks (flock fails with ENOLCK or EOPNOTSUPP) the file alone
// decides: a holder on this host whose process is gone is stale, any other holder holds it (two runs started in the
// same instant can then both pass).
inline constexpr const char* kLockFile = ".automodel.lock";

struct LockHolder {
  int64_t pid = 0;
  std::string host, started;     // started: UTC, ISO 8601
  std::string describe() const;  // "pid 123 on host node7, started 2025-06-01T12:34:56Z"
};

// The holder the lock file names; nullopt when there is no file or it names none.
std::optional<LockHolder> read_lock_holder(const std::string& checkpoint_dir);
// Whether the holder's process may still run: true for another host (it cannot be checked from here), else whether
// its pid exists.
bool lock_holder_may_be_alive(const LockHolder& holder, const std::string& this_host);
std::string this_host_name();

class CheckpointDirLock {
 public:
  // Creates checkpoint_dir when missing and takes its lock. Error naming the holder (pid, host, start) when another
  // live run holds it, or naming the directory and the OS reason when it cannot be created or written.
  explicit CheckpointDirLock(const std::string& checkpoint_dir);
  ~CheckpointDirLock();  // removes the lock file, then releases the lock
  CheckpointDirLock(const CheckpointDirLock&) = delete;
  CheckpointDirLock& operator=(const CheckpointDirLock&) = delete;

  const std::string& path() const { return path_; }
  const LockHolder& holder() const { return holder_; }  // this process
  // The run whose lock file was left behind and taken over (it died without releasing it); nullopt when none was.
  const std::optional<LockHolder>& taken_over() const { return taken_over_; }

 private:
  std::string dir_, path_;
  int fd_ = -1;
  LockHolder holder_;
  std::optional<LockHolder> taken_over_;
};

// Writes a checkpoint: create the stage, write everything into path(), then publish(). A stage that is destroyed
// without publish() (an exception on the way) is removed and leaves LATEST as it was.
class CheckpointStage {
 public:
  // Creates <checkpoint_dir>/.<name>.staging-<unique>/ (removing stale staging dirs of the same name that an
  // interrupted run left). name: e.g. checkpoint_name(epoch, step).
  CheckpointStage(const std::string& checkpoint_dir, const std::string& name);
  ~CheckpointStage();
  CheckpointStage(const CheckpointStage&) = delete;
  CheckpointStage& operator=(const CheckpointStage&) = delete;

  const std::string& path() const { return staging_; }  // write into this
  const std::string& final_path() const { return final_; }
  bool published() const { return published_; }

  // Flushes every file to disk, writes the completion marker, renames the stage to final_path() (swapping an
  // existing directory of that name out atomically, then removing it), points LATEST at it, and prunes to
  // max_recent complete checkpoints when given. Call once.
  void publish(std::optional<int64_t> max_recent = {});

 private:
  std::string checkpoint_dir_, name_, staging_, final_;
  bool published_ = false;
};

}  // namespace automodel::checkpoint
