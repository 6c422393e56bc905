// The CUDA memory entry of a build without CUDA (the link-time stand-in for the CUDA allocator): any request for
// CUDA memory is an Error.
#include "core/device_memory.h"

#include "core/error.h"

namespace automodel {

const DeviceMemory& cuda_device_memory(Device device) {
  throw Error("cannot use memory on " + device.str() + ": this build has no CUDA backend", "device memory",
              "build automodel with a CUDA toolkit and run on a machine with a GPU, or keep tensors on the CPU");
}

}  // namespace automodel
