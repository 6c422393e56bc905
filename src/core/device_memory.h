#pragma once
// The memory half of a device backend: how bytes on a device are allocated, freed, filled and copied to and from
// the host. Storage and the tensor factories go through it, so nothing in core assumes host memory; the compute
// half (every kernel an op calls) is kernels/backend.h.
//
// The CPU's entry is the caching allocator (core/allocator.h). Another device's entry is defined by the build that
// has it, chosen at link time as MLX chooses backend/metal or backend/no_gpu: a CUDA build compiles
// cuda_device_memory() from its allocator; this one compiles core/no_cuda/device_memory.cpp, whose entry raises
// Error ("this build has no CUDA backend").
#include <cstddef>
#include <cstdint>

#include "core/device.h"

namespace automodel {

struct DeviceMemory {
  void* (*allocate)(size_t nbytes);
  void (*deallocate)(void* data, size_t nbytes);
  // count copies of the elem_size-byte value at `value` (host memory), one after another from dst.
  void (*fill)(void* dst, const void* value, size_t elem_size, int64_t count);
  void (*copy_from_host)(void* dst, const void* host_src, size_t nbytes);
  void (*copy_to_host)(void* host_dst, const void* src, size_t nbytes);
};

// One lookup per call: a switch on the device type.
const DeviceMemory& device_memory(Device device);
const DeviceMemory& cpu_device_memory();
// Defined by the CUDA allocator in a CUDA build, else by the stub (raises Error naming `device`).
const DeviceMemory& cuda_device_memory(Device device);

}  // namespace automodel
