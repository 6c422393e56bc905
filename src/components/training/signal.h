#pragma once
// Graceful-stop signals (NeMo's preemption_signal): a handler that only records that a signal arrived, installed
// for a scope and restored after it; the training loop polls it and saves a checkpoint before leaving.
//
// SIGINT (Ctrl-C) is the interactive stop, as trainers treat it: the first asks for the graceful stop (the handler
// says so on stderr); the second restores the default action and re-raises, so the process dies of SIGINT at once
// (status 130 in a shell, WIFSIGNALED for a parent) without waiting for the step or the checkpoint.
#include <signal.h>

#include <cstdint>
#include <string>
#include <vector>

namespace automodel::training {

// "SIGTERM", "sigusr1", "USR2" or "15" -> the signal number; Error for anything else.
int resolve_signal(const std::string& spec);
// "SIGTERM" for SIGTERM (the number as text when unknown).
std::string signal_name(int signum);

class SignalGuard {
 public:
  // Installs the recording handler for each signal (Error on duplicates or a signal that cannot be caught).
  explicit SignalGuard(const std::vector<int>& signals);
  ~SignalGuard();  // restores the previous handlers
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;

  // Whether any of the signals arrived since this guard was installed.
  bool received() const;
  // The first of the signals (in the order given) that arrived since this guard was installed; 0 when none did.
  int received_signal() const;
  const std::vector<int>& signals() const { return signals_; }

 private:
  std::vector<int> signals_;
  std::vector<uint64_t> count_at_install_;
  std::vector<struct sigaction> previous_;
  uint64_t previous_interrupt_limit_ = 0;
};

}  // namespace automodel::training
