#pragma once
// Per-layer flat parameter buffers (DESIGN.md): every parameter of a module moved into one
// allocation, and its gradient bound to the matching slice of one gradient allocation, so that
// optimizers and data-parallel all-reduce walk whole buffers instead of many small tensors.
#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"

namespace automodel::nn {

using NamedParameters = std::vector<std::pair<std::string, Tensor>>;

struct FlatParameters {
  Tensor data;  // 1-D, all parameters back to back (each slot 64-byte aligned)
  Tensor grad;  // 1-D, same layout; zeroed
  struct Slot {
    std::string name;
    int64_t offset, numel;  // in elements, from the start of data (and grad)
    int64_t whole = 0;      // a stretch of a larger parameter (a shard's slot): that parameter's elements; else 0
  };
  std::vector<Slot> slots;
};

// Rebinds each of `params` (non-empty, one dtype) to a view of a new flat buffer, copying its
// values; tensors that held a parameter keep seeing it. Gradients of parameters that require
// grad become views of `grad` (accumulated in place by backward).
FlatParameters flatten_parameters(const NamedParameters& params);
// As above, in an allocation of its own whose length is rounded up to a multiple of `length_multiple` (zero padding
// after the last slot: e.g. so that N ranks hold equal shards), each slot starting on a multiple of `slot_alignment`
// elements as well as on the allocator's alignment.
FlatParameters flatten_parameters(const NamedParameters& params, int64_t length_multiple, int64_t slot_alignment = 1);
// Every parameter of `module`, named as module.named_parameters() names them.
FlatParameters flatten_parameters(Module& module);

// One buffer per list (each non-empty, all of one dtype), as flatten_parameters would make it,
// but laid end to end in one data and one grad allocation: buffer i + 1 starts where buffer i
// ends, so the buffers together have exactly the layout one flatten_parameters over all the lists
// concatenated would have (the optimizer treats such adjacent buffers as one run: results do not
// depend on how a model is cut into buffers).
std::vector<FlatParameters> flatten_parameter_lists(const std::vector<NamedParameters>& lists);

// root's parameters (only those that require grad with trainable_only), in named_parameters()
// order, cut into lists: one per module in `modules` (dotted names under root) that has such
// parameters, and the parameters outside them in one list per run between those (e.g. for a
// causal LM with modules model.layers.0 .. N-1: the embeddings, one list per decoder layer, then
// the final norm and the LM head). A module's parameters must be consecutive.
std::vector<NamedParameters> parameters_by_module(const Module& root, const std::vector<std::string>& modules,
                                                  bool trainable_only);

}  // namespace automodel::nn
