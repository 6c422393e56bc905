#include "components/training/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>

namespace automodel::training {

bool stdout_is_tty() { return ::isatty(STDOUT_FILENO) == 1; }

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  int64_t s = int64_t(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", (long long)(s / 3600), (long long)(s / 60 % 60),
                  (long long)(s % 60));
  else
    std::snprintf(buf, sizeof(buf), "%02lld:%02lld", (long long)(s / 60), (long long)(s % 60));
  return buf;
}

ProgressReporter::ProgressReporter(std::ostream& out, ProgressOptions options)
    : out_(out), options_(std::move(options)) {
  options_.log_every = std::max<int64_t>(1, options_.log_every);
  start_ = options_.now();
}

ProgressReporter::~ProgressReporter() { close(); }

std::string ProgressReporter::eta_text(int64_t done) const {
  const int64_t done_here = done - options_.initial_step;
  const double elapsed = options_.now() - start_;
  if (done_here <= 0 || options_.total_steps <= 0) return "?";
  return format_duration(elapsed / double(done_here) * double(std::max<int64_t>(0, options_.total_steps - done)));
}

namespace {
std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}
}  // namespace

void ProgressReporter::update(const StepProgress& p) {
  if (closed_) return;
  const int64_t done = p.step + 1, total = options_.total_steps;
  const std::string elapsed = format_duration(options_.now() - start_);
  if (options_.is_tty) {
    const double frac = total > 0 ? std::clamp(double(done) / double(total), 0.0, 1.0) : 0.0;
    const int filled = int(frac * options_.bar_width);
    std::string bar(size_t(filled), '#');
    bar.resize(size_t(options_.bar_width), ' ');
    // \r returns to the line start and \x1b[K clears what a longer previous draw left.
    out_ << '\r' << options_.desc << ' ' << fmt("%3.0f", frac * 100) << "%|" << bar << "| " << done << '/' << total
         << " [" << elapsed << '<' << eta_text(done) << ", loss=" << fmt("%.4f", p.loss) << ", lr=" << fmt("%.2e", p.lr)
         << ", tps=" << fmt("%.0f", p.tps) << "]\x1b[K" << std::flush;
    drawn_ = true;
    return;
  }
  if (done % options_.log_every != 0 && done != total) return;
  out_ << options_.desc << " step " << done << '/' << total << " | epoch " << p.epoch << " | loss "
       << fmt("%.4f", p.loss);
  if (p.grad_norm) out_ << " | grad_norm " << fmt("%.4f", *p.grad_norm);
  out_ << " | lr " << fmt("%.2e", p.lr) << " | tps " << fmt("%.0f", p.tps) << " | elapsed " << elapsed << " | eta "
       << eta_text(done) << '\n'
       << std::flush;
}

void ProgressReporter::close() {
  if (closed_) return;
  closed_ = true;
  if (options_.is_tty && drawn_) out_ << '\n' << std::flush;
}

}  // namespace automodel::training
