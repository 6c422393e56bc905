#include "ops/backend.h"

namespace automodel::ops {

const kernels::Backend& backend_for(Device device, const char* op) {
  return device.is_cpu() ? kernels::cpu_backend() : kernels::cuda_backend(device, op);
}

void check_same_device(const Tensor& first, const Tensor& other, const char* op) {
  if (other.defined() && other.device() != first.device())
    throw Error(
        detail::str(op, ": tensors on different devices (", first.device().str(), " and ", other.device().str(), ")"),
        op, "move them to one device first");
}

}  // namespace automodel::ops
