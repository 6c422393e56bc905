// The CUDA backend of a build without CUDA: the link-time stand-in for kernels/cuda (as MLX's backend/no_gpu), so
// that an op meeting a CUDA tensor says so instead of misbehaving.
#include "kernels/backend.h"

#include "core/error.h"

namespace automodel::kernels {

const Backend& cuda_backend(Device device, const char* op) {
  throw Error(detail::str(op, ": the tensors are on ", device.str(), ", but this build has no CUDA backend"), op,
              "build automodel with a CUDA toolkit and run on a machine with a GPU, or keep the tensors on the CPU");
}

}  // namespace automodel::kernels
