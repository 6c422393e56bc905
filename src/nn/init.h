#pragma once
// Whether new modules draw random initial weights. Loading a checkpoint overwrites every
// parameter anyway, so it builds the module under SkipInitGuard and skips the random draws.
namespace automodel::nn {

bool init_enabled();

class SkipInitGuard {
 public:
  SkipInitGuard();
  ~SkipInitGuard();
  SkipInitGuard(const SkipInitGuard&) = delete;
  SkipInitGuard& operator=(const SkipInitGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace automodel::nn
