#pragma once
// DDP's gradient synchronisation over per-layer flat gradient buffers: adjacent buffers are grouped into buckets of
// about `bucket_bytes`, and each bucket's all-reduce starts, non-blocking, as soon as backward has made all of its
// gradients final (the per-layer hooks say when), so communication runs behind the rest of backward. Only the last
// micro-batch of a step synchronises; earlier ones accumulate locally (DDP's no_sync).
#include <cstdint>
#include <memory>
#include <vector>

#include "autograd/layer_hooks.h"
#include "components/distributed/communicator.h"
#include "nn/flat_params.h"

namespace automodel::distributed {

class GradientReducer {
 public:
  static constexpr int64_t kDefaultBucketBytes = 25 << 20;  // torch DDP's bucket_cap_mb

  // `buffers`: the trainable flat buffers in model order, laid end to end in one gradient allocation (as
  // nn::flatten_parameter_lists makes them); a buffer whose slots are all under "model.layers.<l>." belongs to layer
  // l, the others (embeddings, final norm, LM head) are reduced when backward has returned.
  // Without `overlap` every bucket starts after backward (for measuring what the overlap hides).
  GradientReducer(Communicator& comm, const std::vector<nn::FlatParameters>& buffers,
                  int64_t bucket_bytes = kDefaultBucketBytes, bool overlap = true);

  // The hooks to pass in ForwardOptions: the reduction follows the layers' backward.
  std::shared_ptr<const autograd::LayerHooks> hooks() const { return hooks_; }

  // Before the backward of a micro-batch: `sync` for the step's last one.
  void begin_backward(bool sync);
  // After that backward: starts what is left (or everything, when no hook fired) and waits for all of it. The
  // gradients are then the sum over the ranks.
  void finish_backward();

  // Seconds spent in finish_backward so far: the communication backward did not hide.
  double exposed_seconds() const { return exposed_seconds_; }
  int64_t num_buckets() const { return int64_t(buckets_.size()); }

 private:
  struct Bucket {
    Tensor grad;               // a view over its buffers' gradients, end to end
    int64_t first_layer = -1;  // the bucket starts when this layer's backward is done; -1: after backward
    std::unique_ptr<Request> request;
  };
  void layer_done(int64_t layer);
  void start(Bucket& b);

  Communicator& comm_;
  std::vector<Bucket> buckets_;  // in backward order (the last layers' first)
  std::shared_ptr<autograd::LayerHooks> hooks_;
  bool sync_ = false;
  bool overlap_ = true;
  double exposed_seconds_ = 0;
};

}  // namespace automodel::distributed
