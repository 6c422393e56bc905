#pragma once
// Per-layer flat parameter buffers (DESIGN.md): every parameter of a module moved into one
// allocation, and its gradient bound to the matching slice of one gradient allocation, so that
// optimizers and data-parallel all-reduce walk whole buffers instead of many small tensors.
#include <string>
#include <vector>

#include "nn/module.h"

namespace automodel::nn {

struct FlatParameters {
  Tensor data;  // 1-D, all parameters back to back (each slot 64-byte aligned)
  Tensor grad;  // 1-D, same layout; zeroed
  struct Slot {
    std::string name;
    int64_t offset, numel;
  };
  std::vector<Slot> slots;
};

// Rebinds each parameter of `module` (of one dtype) to a view of a new flat buffer, copying its
// values; tensors that held a parameter keep seeing it. Gradients of parameters that require
// grad become views of `grad` (accumulated in place by backward).
FlatParameters flatten_parameters(Module& module);

}  // namespace automodel::nn
