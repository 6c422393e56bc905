#pragma once
// FSDP2 / ZeRO-3 on CPU ranks: each trainable flat buffer (one per decoder layer, and the embeddings and the final
// norm / LM head around them) is cut into equal shards, one per rank. A rank keeps only its shard of the parameters,
// of the gradients and, through the optimizer it feeds (shards()), of the optimizer state. A layer's full
// parameters exist only while it runs: all-gathered just before its forward (the next layer's gather started
// meanwhile) and released after it, gathered again before its backward, after which its full gradients are
// reduce-scattered into the shards and released. The buffers outside the layers are gathered for a whole step.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/layer_hooks.h"
#include "components/distributed/communicator.h"
#include "nn/flat_params.h"

namespace automodel::distributed {

class ShardedParameters {
 public:
  // `lists`: the trainable parameters cut as nn::parameters_by_module cuts them, equal on every rank (each rank
  // loaded the same weights); they are moved into full buffers that keep memory only while gathered. `comm`: the
  // ranks that share the shards. HSDP: `replicas` (null: none) joins the ranks that hold the same shard in the
  // other groups; the step's shard gradients are then summed across them too. `slot_alignment`: every shard
  // boundary falls on a multiple of it from the start of the parameter it cuts (AdamW8bit's block size: each shard
  // then holds whole quantization blocks).
  ShardedParameters(Communicator& comm, const std::vector<nn::NamedParameters>& lists, Communicator* replicas = nullptr,
                    int64_t slot_alignment = 1);
  ~ShardedParameters();

  // This rank's part of each buffer (data and gradient, slots clipped to it): what the optimizer steps.
  const std::vector<nn::FlatParameters>& shards() const { return shards_; }
  // The hooks to pass in ForwardOptions.
  std::shared_ptr<const autograd::LayerHooks> hooks() const { return hooks_; }

  // Before a step's (or a validation's) first forward: the buffers outside the layers, gathered (with zeroed full
  // gradients when `backward` will follow).
  void begin_step(bool backward);
  // After each micro-batch's backward: every gradient reduce-scattered into (added to) the shards; after the step's
  // last, with replicas, summed across them.
  void finish_backward(bool last_micro_batch);
  // After the optimizer has updated the shards: the buffers outside the layers released.
  void end_step();

  // Every buffer's full parameters, e.g. to write a consolidated checkpoint; release_all() frees them again.
  void gather_all();
  void release_all();
  // After new values were written into the full parameters (gathered, e.g. loaded from a checkpoint): each shard
  // takes its part of them.
  void take_shards_from_full();

  // The part of each parameter this rank's shard holds: elements [offset, offset + numel) of its `total`, by name.
  // For another rank's shard: `rank` (the ranks of `comm`).
  struct Range {
    int64_t offset, numel, total;
  };
  std::map<std::string, Range> parameter_ranges() const { return parameter_ranges(comm_.rank()); }
  std::map<std::string, Range> parameter_ranges(int rank) const;
  // This rank's stretch of each parameter (a 1-D view of its shard), by name.
  std::map<std::string, Tensor> parameter_stretches() const;

  // Bytes of the shards this rank keeps (parameters and gradients).
  int64_t shard_bytes() const;
  // Seconds spent waiting for gathers and reductions so far: the communication that compute did not hide.
  double exposed_seconds() const { return exposed_seconds_; }

 private:
  struct Buffer;
  void gather(size_t i);
  void wait_gather(size_t i);
  void release(size_t i);
  void prepare_grad(size_t i);
  void start_reduce(size_t i);
  void finish_reduce(size_t i, bool keep_grad);
  void progress();
  void wait(Request& request);
  size_t buffer_of_layer(int64_t layer) const;

  Communicator& comm_;
  Communicator* replicas_;
  std::vector<std::unique_ptr<Buffer>> buffers_;
  std::vector<nn::FlatParameters> shards_;
  std::vector<int64_t> layer_buffer_;  // buffer index per decoder layer (-1: the layer has no trainable parameter)
  std::shared_ptr<autograd::LayerHooks> hooks_;
  double exposed_seconds_ = 0;
};

}  // namespace automodel::distributed
