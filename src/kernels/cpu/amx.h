#pragma once
// AMX bf16 tile products (Intel Advanced Matrix Extensions): whether this build and process may use
// them. Linux hands a process the tile state only on request, so the first query asks the kernel.
namespace automodel::cpu {

// This build targets AMX-BF16, the CPU has it and the kernel granted the tile state.
bool amx_bf16_available();

// Kernels with an AMX path take it when this is true: available and not switched off. The switch
// lets tests and benchmarks run the AVX512-BF16 path on the same machine; default on,
// off when the environment sets AUTOMODEL_AMX=0.
bool amx_bf16_enabled();
void set_amx_bf16_enabled(bool on);

}  // namespace automodel::cpu
