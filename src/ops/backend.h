#pragma once
// The one door from ops/ to the kernels: the backend table (kernels/backend.h) of the device an op's tensors live
// on, looked up once per op call (forward, and again in its Node's backward).
#include "core/error.h"
#include "core/tensor.h"
#include "kernels/backend.h"

namespace automodel::ops {

// The table for `device`: the CPU's, or CUDA's (an Error naming `op` in a build without CUDA).
const kernels::Backend& backend_for(Device device, const char* op);

// An Error naming `op` when `other` is defined and not on `first`'s device.
void check_same_device(const Tensor& first, const Tensor& other, const char* op);

// The table for the device of `first`, after checking that the other tensors (undefined ones skipped) are there
// too.
template <class... Rest>
const kernels::Backend& backend_of(const char* op, const Tensor& first, const Rest&... rest) {
  (check_same_device(first, rest, op), ...);
  return backend_for(first.device(), op);
}

}  // namespace automodel::ops
