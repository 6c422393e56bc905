#include "components/training/signal.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>

#include "core/error.h"

namespace automodel::training {

namespace {

// One arrival counter per signal number: the handler may only touch lock-free atomics, and counting (rather than
// a flag) lets nested or successive guards each see only the signals sent during their own lifetime.
constexpr int kMaxSignal = 65;
std::atomic<uint64_t> g_arrivals[kMaxSignal];
static_assert(std::atomic<uint64_t>::is_always_lock_free, "the signal handler needs lock-free atomics");

// The SIGINT arrival count at which the process exits at once: the second Ctrl-C under a guard that handles SIGINT
// (no limit otherwise).
constexpr uint64_t kNoLimit = ~uint64_t(0);
std::atomic<uint64_t> g_interrupt_limit{kNoLimit};

// Only async-signal-safe calls: write(2), sigaction(2), raise(3).
void say(const char* text) {
  const ssize_t ignored = ::write(STDERR_FILENO, text, ::strlen(text));
  (void)ignored;
}

extern "C" void record_signal(int signum) {
  if (signum <= 0 || signum >= kMaxSignal) return;
  const uint64_t arrivals = g_arrivals[signum].fetch_add(1, std::memory_order_relaxed) + 1;
  if (signum != SIGINT) return;
  if (arrivals < g_interrupt_limit.load(std::memory_order_relaxed)) {
    say("\ninterrupted: stopping cleanly after this step; press Ctrl-C again to exit at once\n");
    return;
  }
  say("\ninterrupted again: exiting now\n");
  struct sigaction action;
  ::memset(&action, 0, sizeof(action));
  action.sa_handler = SIG_DFL;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);
  // SIGINT is blocked while its handler runs: the raised one is delivered, with the default action, on return.
  ::raise(SIGINT);
}

struct NamedSignal {
  const char* name;
  int number;
};
const NamedSignal kSignals[] = {{"SIGHUP", SIGHUP},   {"SIGINT", SIGINT},   {"SIGQUIT", SIGQUIT}, {"SIGUSR1", SIGUSR1},
                                {"SIGUSR2", SIGUSR2}, {"SIGALRM", SIGALRM}, {"SIGTERM", SIGTERM}, {"SIGCONT", SIGCONT},
                                {"SIGTSTP", SIGTSTP}, {"SIGXCPU", SIGXCPU}, {"SIGPWR", SIGPWR}};

std::string known_names() {
  std::string out;
  for (const auto& s : kSignals) out += (out.empty() ? "" : ", ") + std::string(s.name);
  return out;
}

}  // namespace

int resolve_signal(const std::string& spec) {
  std::string s;
  for (char c : spec)
    if (!std::isspace(static_cast<unsigned char>(c))) s += char(std::toupper(static_cast<unsigned char>(c)));
  if (!s.empty() &&
      std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    int n = s.size() < 4 ? std::stoi(s) : -1;
    if (n > 0 && n < kMaxSignal && n != SIGKILL && n != SIGSTOP) return n;
    throw Error("invalid signal number '" + spec + "'", "preemption_signal",
                "give a catchable signal number (1.." + std::to_string(kMaxSignal - 1) + ", not SIGKILL/SIGSTOP)");
  }
  if (s.rfind("SIG", 0) != 0) s = "SIG" + s;
  for (const auto& known : kSignals)
    if (s == known.name) return known.number;
  throw Error("unknown signal name '" + spec + "'", "preemption_signal", "use one of " + known_names());
}

std::string signal_name(int signum) {
  for (const auto& known : kSignals)
    if (known.number == signum) return known.name;
  return std::to_string(signum);
}

SignalGuard::SignalGuard(const std::vector<int>& signals) : signals_(signals) {
  for (size_t i = 0; i < signals_.size(); ++i) {
    int sig = signals_[i];
    if (sig <= 0 || sig >= kMaxSignal || sig == SIGKILL || sig == SIGSTOP)
      throw Error("signal " + std::to_string(sig) + " cannot be handled", "preemption_signal",
                  "use a catchable signal such as SIGTERM or SIGUSR1");
    if (std::count(signals_.begin(), signals_.end(), sig) > 1)
      throw Error("duplicate signal " + signal_name(sig), "preemption_signal", "list each signal once");
  }
  previous_.resize(signals_.size());
  for (int sig : signals_) count_at_install_.push_back(g_arrivals[sig].load());
  previous_interrupt_limit_ = g_interrupt_limit.load();
  if (std::count(signals_.begin(), signals_.end(), SIGINT) != 0) g_interrupt_limit = g_arrivals[SIGINT].load() + 2;
  for (size_t i = 0; i < signals_.size(); ++i) {
    struct sigaction action;
    ::memset(&action, 0, sizeof(action));
    action.sa_handler = record_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;  // a blocking read in the data pipeline resumes instead of failing with EINTR
    if (::sigaction(signals_[i], &action, &previous_[i]) != 0) {
      for (size_t j = 0; j < i; ++j) ::sigaction(signals_[j], &previous_[j], nullptr);
      g_interrupt_limit = previous_interrupt_limit_;
      throw Error("cannot install a handler for " + signal_name(signals_[i]), "preemption_signal",
                  std::string("sigaction failed: ") + ::strerror(errno));
    }
  }
}

SignalGuard::~SignalGuard() {
  for (size_t i = signals_.size(); i-- > 0;) ::sigaction(signals_[i], &previous_[i], nullptr);
  g_interrupt_limit = previous_interrupt_limit_;
}

bool SignalGuard::received() const { return received_signal() != 0; }

int SignalGuard::received_signal() const {
  for (size_t i = 0; i < signals_.size(); ++i)
    if (g_arrivals[signals_[i]].load() != count_at_install_[i]) return signals_[i];
  return 0;
}

}  // namespace automodel::training
