#pragma once
// Training progress on the console: on a terminal one bar that redraws in place (as NeMo's tqdm bar: steps done /
// total, loss, lr, tokens/s, elapsed and ETA); otherwise (a log file, a pipe) one plain line per log interval.
#include <chrono>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>

namespace automodel::training {

// Whether standard output is a terminal.
bool stdout_is_tty();

struct ProgressOptions {
  int64_t total_steps = 0;   // max_steps
  int64_t initial_step = 0;  // steps already done (a resumed run)
  bool is_tty = false;
  int64_t log_every = 1;  // plain mode: a line every this many steps (and always for the last one)
  int bar_width = 20;
  std::string desc = "Training";
  // Seconds on a monotonic clock; tests inject a fake one.
  std::function<double()> now = [] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  };
};

struct StepProgress {
  int64_t step = 0;  // NeMo's 0-based step just finished: the bar shows step + 1 done
  int64_t epoch = 0;
  double loss = 0, lr = 0, tps = 0;
  std::optional<double> grad_norm;
};

class ProgressReporter {
 public:
  ProgressReporter(std::ostream& out, ProgressOptions options);
  ~ProgressReporter();  // close()
  void update(const StepProgress& p);
  // Ends the bar's line (terminal mode); idempotent.
  void close();

 private:
  std::string eta_text(int64_t done) const;
  std::ostream& out_;
  ProgressOptions options_;
  double start_ = 0;
  bool drawn_ = false, closed_ = false;
};

// "01:05" below an hour, else "1:01:05" (tqdm's style).
std::string format_duration(double seconds);

}  // namespace automodel::training
