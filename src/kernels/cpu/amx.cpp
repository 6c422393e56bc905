#include "kernels/cpu/amx.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#if defined(__AMX_BF16__) && defined(__AMX_TILE__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace automodel::cpu {

namespace {

bool request_tile_state() {
#if defined(__AMX_BF16__) && defined(__AMX_TILE__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool amx_tile = edx & (1u << 24), amx_bf16 = edx & (1u << 22);
  if (!amx_tile || !amx_bf16) return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;  // asm/prctl.h, Linux >= 5.16
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

// AUTOMODEL_AMX=0 in the environment starts with the switch off (A/B runs of whole programs).
bool initially_on() {
  const char* v = std::getenv("AUTOMODEL_AMX");
  return !(v && std::strcmp(v, "0") == 0);
}

std::atomic<bool> switched_on{initially_on()};

}  // namespace

bool amx_bf16_available() {
  static const bool granted = request_tile_state();
  return granted;
}

bool amx_bf16_enabled() { return switched_on.load(std::memory_order_relaxed) && amx_bf16_available(); }

void set_amx_bf16_enabled(bool on) { switched_on.store(on, std::memory_order_relaxed); }

}  // namespace automodel::cpu
