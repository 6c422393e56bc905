#include "components/distributed/gradient_reducer.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "components/distributed/decoder_layer_of.h"
#include "core/error.h"

namespace automodel::distributed {

GradientReducer::GradientReducer(Communicator& comm, const std::vector<nn::FlatParameters>& buffers,
                                 int64_t bucket_bytes, bool overlap)
    : comm_(comm), overlap_(overlap) {
  AM_CHECK(!buffers.empty(), "GradientReducer: no gradient buffers");
  AM_CHECK(bucket_bytes > 0, "GradientReducer: bucket_bytes must be positive");
  std::vector<int64_t> ready(buffers.size());
  int64_t last_layer = -1;
  for (size_t i = 0; i < buffers.size(); ++i) {
    ready[i] = decoder_layer_of(buffers[i]);
    last_layer = std::max(last_layer, ready[i]);
    AM_CHECK(buffers[i].grad.storage() == buffers.front().grad.storage(),
             "GradientReducer: the gradient buffers must share one allocation");
  }
  // Buffers after the last layer (final norm, an untied LM head) are final before any layer's backward runs.
  for (size_t i = buffers.size(); i-- > 0 && ready[i] == -1;) ready[i] = last_layer;

  // Buckets in backward order; a bucket ends at bucket_bytes or where the readiness switches to "after backward".
  const size_t element = dtype_size(buffers.front().grad.dtype());
  for (size_t end = buffers.size(); end > 0;) {
    size_t begin = end - 1;
    int64_t bytes = int64_t(buffers[begin].grad.numel() * element);
    int64_t first_layer = ready[begin];
    while (begin > 0 && bytes < bucket_bytes && (ready[begin - 1] == -1) == (first_layer == -1)) {
      --begin;
      bytes += int64_t(buffers[begin].grad.numel() * element);
      first_layer = std::min(first_layer, ready[begin]);
    }
    const Tensor& first = buffers[begin].grad;
    const Tensor& last = buffers[end - 1].grad;
    const int64_t numel = last.offset() + last.numel() - first.offset();
    buckets_.push_back(Bucket{first.as_strided({numel}, {1}, first.offset()), first_layer, nullptr});
    end = begin;
  }

  hooks_ = std::make_shared<autograd::LayerHooks>();
  hooks_->after_backward = [this](int64_t layer) { layer_done(layer); };
}

void GradientReducer::begin_backward(bool sync) { sync_ = sync; }

void GradientReducer::start(Bucket& b) {
  if (!b.request) b.request = comm_.all_reduce_async(b.grad);
}

void GradientReducer::layer_done(int64_t layer) {
  if (!sync_ || !overlap_) return;
  for (Bucket& b : buckets_) {
    if (b.first_layer == layer) start(b);
    // Non-blocking collectives advance only inside MPI calls: each layer boundary lets the running ones progress.
    else if (b.request)
      b.request->test();
  }
}

void GradientReducer::finish_backward() {
  if (!sync_) return;
  const auto t0 = std::chrono::steady_clock::now();
  for (Bucket& b : buckets_) start(b);
  for (Bucket& b : buckets_) {
    b.request->wait();
    b.request.reset();
  }
  exposed_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  sync_ = false;
}

}  // namespace automodel::distributed
