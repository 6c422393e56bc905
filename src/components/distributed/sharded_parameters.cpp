#include "components/distributed/sharded_parameters.h"

#include <chrono>
#include <cstring>
#include <numeric>

#include "components/distributed/decoder_layer_of.h"
#include "core/allocator.h"
#include "core/error.h"

namespace automodel::distributed {

struct ShardedParameters::Buffer {
  nn::FlatParameters full;  // the parameters view it; memory only while gathered (data) or reducing (grad)
  Tensor scatter;           // the reduce-scatter's result while one is in flight, then added into the shard's gradient
  int64_t layer = -1;
  bool gathered = false, grad_ready = false;
  std::unique_ptr<Request> gathering, reducing;
};

namespace {

// dst += src, elementwise (f32 or bf16, the gradients' dtypes).
void add_into(const Tensor& dst, const Tensor& src) {
  const int64_t n = dst.numel();
  if (dst.dtype() == DType::f32) {
    float* d = dst.data<float>();
    const float* s = src.data<float>();
    for (int64_t i = 0; i < n; ++i) d[i] += s[i];
  } else {
    AM_CHECK(dst.dtype() == DType::bf16, "sharded gradients must be f32 or bf16, not ", dtype_name(dst.dtype()));
    bf16* d = dst.data<bf16>();
    const bf16* s = src.data<bf16>();
    for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(bf16_to_float(d[i]) + bf16_to_float(s[i]));
  }
}

// full's slots clipped to [begin, begin + n), offsets from begin.
std::vector<nn::FlatParameters::Slot> clip_slots(const nn::FlatParameters& full, int64_t begin, int64_t n) {
  std::vector<nn::FlatParameters::Slot> slots;
  for (const auto& s : full.slots) {
    const int64_t lo = std::max(s.offset, begin), hi = std::min(s.offset + s.numel, begin + n);
    if (lo < hi) slots.push_back({s.name, lo - begin, hi - lo, s.numel});
  }
  return slots;
}

}  // namespace

ShardedParameters::ShardedParameters(Communicator& comm, const std::vector<nn::NamedParameters>& lists,
                                     Communicator* replicas, int64_t slot_alignment)
    : comm_(comm), replicas_(replicas) {
  AM_CHECK(!lists.empty(), "ShardedParameters: no parameters to shard");
  const int64_t ranks = comm.size();
  int64_t num_layers = 0;
  for (const nn::NamedParameters& list : lists) {
    auto b = std::make_unique<Buffer>();
    const DType dtype = list.front().second.dtype();
    // Equal shards, each starting on the allocator's alignment and on a multiple of slot_alignment from the start of
    // every slot (which starts on one too).
    const int64_t align = std::lcm(int64_t(CachingAllocator::kAlignment / dtype_size(dtype)), slot_alignment);
    b->full = nn::flatten_parameters(list, ranks * align, slot_alignment);
    b->layer = decoder_layer_of(b->full);
    num_layers = std::max(num_layers, b->layer + 1);
    const int64_t n = b->full.data.numel() / ranks, begin = comm.rank() * n;
    nn::FlatParameters shard;
    shard.data = Tensor::empty({n}, dtype);
    std::memcpy(shard.data.raw_data(), static_cast<char*>(b->full.data.raw_data()) + begin * dtype_size(dtype),
                size_t(n) * dtype_size(dtype));
    shard.grad = Tensor::zeros({n}, dtype);
    shard.slots = clip_slots(b->full, begin, n);
    b->full.data.storage()->free_memory();
    b->full.grad.storage()->free_memory();
    shards_.push_back(shard);
    buffers_.push_back(std::move(b));
  }
  layer_buffer_.assign(size_t(num_layers), -1);
  for (size_t i = 0; i < buffers_.size(); ++i)
    if (buffers_[i]->layer >= 0) layer_buffer_[size_t(buffers_[i]->layer)] = int64_t(i);

  hooks_ = std::make_shared<autograd::LayerHooks>();
  hooks_->before_forward = [this](int64_t layer) {
    const size_t i = buffer_of_layer(layer);
    if (i == size_t(-1)) return;
    gather(i);
    wait_gather(i);
    if (size_t next = buffer_of_layer(layer + 1); next != size_t(-1)) gather(next);  // prefetch
    progress();
  };
  hooks_->after_forward = [this](int64_t layer) {
    if (const size_t i = buffer_of_layer(layer); i != size_t(-1)) release(i);
  };
  hooks_->before_backward = [this](int64_t layer) {
    const size_t i = buffer_of_layer(layer);
    if (i == size_t(-1)) return;
    gather(i);
    prepare_grad(i);
    wait_gather(i);
    if (size_t prev = buffer_of_layer(layer - 1); prev != size_t(-1)) gather(prev);  // prefetch
    progress();
  };
  hooks_->after_backward = [this](int64_t layer) {
    if (const size_t i = buffer_of_layer(layer); i != size_t(-1)) start_reduce(i);
    progress();
  };
}

ShardedParameters::~ShardedParameters() = default;

size_t ShardedParameters::buffer_of_layer(int64_t layer) const {
  if (layer < 0 || layer >= int64_t(layer_buffer_.size())) return size_t(-1);
  return size_t(layer_buffer_[size_t(layer)]);
}

void ShardedParameters::gather(size_t i) {
  Buffer& b = *buffers_[i];
  if (b.gathered || b.gathering) return;
  b.full.data.storage()->restore_memory();
  b.gathering = comm_.all_gather_async(shards_[i].data, b.full.data);
}

void ShardedParameters::wait_gather(size_t i) {
  Buffer& b = *buffers_[i];
  if (!b.gathering) return;
  wait(*b.gathering);
  b.gathering.reset();
  b.gathered = true;
}

void ShardedParameters::release(size_t i) {
  Buffer& b = *buffers_[i];
  wait_gather(i);  // a prefetch still in flight writes into the memory
  b.full.data.storage()->free_memory();
  b.gathered = false;
}

void ShardedParameters::prepare_grad(size_t i) {
  Buffer& b = *buffers_[i];
  if (b.grad_ready) return;
  b.full.grad.storage()->restore_memory();
  std::memset(b.full.grad.raw_data(), 0, b.full.grad.nbytes());
  b.grad_ready = true;
}

void ShardedParameters::start_reduce(size_t i) {
  Buffer& b = *buffers_[i];
  AM_CHECK(b.grad_ready && !b.reducing, "ShardedParameters: no full gradient to reduce for buffer ", i);
  b.scatter = Tensor::empty(shards_[i].grad.shape(), shards_[i].grad.dtype());
  b.reducing = comm_.reduce_scatter_async(b.full.grad, b.scatter);
  // A layer's parameters are not needed again this step (the reduction reads only its gradients).
  if (b.layer >= 0) release(i);
}

// keep_grad: the buffers outside the layers keep their full gradient memory, zeroed, for the step's next micro-batch.
void ShardedParameters::finish_reduce(size_t i, bool keep_grad) {
  Buffer& b = *buffers_[i];
  if (!b.reducing) return;
  wait(*b.reducing);
  b.reducing.reset();
  add_into(shards_[i].grad, b.scatter);
  b.scatter = Tensor();
  if (keep_grad) {
    std::memset(b.full.grad.raw_data(), 0, b.full.grad.nbytes());
    return;
  }
  b.full.grad.storage()->free_memory();
  b.grad_ready = false;
}

void ShardedParameters::wait(Request& request) {
  const auto t0 = std::chrono::steady_clock::now();
  request.wait();
  exposed_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Non-blocking collectives advance only inside MPI calls: every hook lets the ones in flight progress, and finishes
// the reductions that are done (freeing their memory early).
void ShardedParameters::progress() {
  for (size_t i = 0; i < buffers_.size(); ++i) {
    Buffer& b = *buffers_[i];
    if (b.gathering) b.gathering->test();
    if (b.reducing && b.reducing->test()) finish_reduce(i, b.layer < 0);
  }
}

void ShardedParameters::begin_step(bool backward) {
  for (size_t i = 0; i < buffers_.size(); ++i) {
    if (buffers_[i]->layer >= 0) continue;
    gather(i);
    if (backward) prepare_grad(i);
  }
  for (size_t i = 0; i < buffers_.size(); ++i) wait_gather(i);
}

void ShardedParameters::finish_backward(bool last_micro_batch) {
  for (size_t i = 0; i < buffers_.size(); ++i)
    if (buffers_[i]->layer < 0 && buffers_[i]->grad_ready && !buffers_[i]->reducing) start_reduce(i);
  for (size_t i = 0; i < buffers_.size(); ++i) finish_reduce(i, buffers_[i]->layer < 0);
  // Across the replicas once per step, in buffer order on every rank (the reductions above finish in whatever order
  // their ranks see them complete).
  if (last_micro_batch && replicas_ != nullptr)
    for (const nn::FlatParameters& s : shards_) replicas_->all_reduce(s.grad);
}

void ShardedParameters::end_step() {
  for (size_t i = 0; i < buffers_.size(); ++i) {
    Buffer& b = *buffers_[i];
    if (b.layer >= 0) continue;
    release(i);
    if (b.grad_ready) {
      b.full.grad.storage()->free_memory();
      b.grad_ready = false;
    }
  }
}

void ShardedParameters::gather_all() {
  for (size_t i = 0; i < buffers_.size(); ++i) gather(i);
  for (size_t i = 0; i < buffers_.size(); ++i) wait_gather(i);
}

void ShardedParameters::release_all() {
  for (size_t i = 0; i < buffers_.size(); ++i) release(i);
}

void ShardedParameters::take_shards_from_full() {
  for (size_t i = 0; i < buffers_.size(); ++i) {
    const Buffer& b = *buffers_[i];
    AM_CHECK(b.gathered, "take_shards_from_full: buffer ", i, " is not gathered");
    const Tensor& shard = shards_[i].data;
    const size_t bytes = shard.nbytes();
    std::memcpy(shard.raw_data(), static_cast<const char*>(b.full.data.raw_data()) + size_t(comm_.rank()) * bytes,
                bytes);
  }
}

std::map<std::string, ShardedParameters::Range> ShardedParameters::parameter_ranges(int rank) const {
  std::map<std::string, Range> out;
  for (size_t i = 0; i < buffers_.size(); ++i) {
    const int64_t n = shards_[i].data.numel(), begin = rank * n;
    for (const auto& s : clip_slots(buffers_[i]->full, begin, n))
      for (const auto& f : buffers_[i]->full.slots)
        if (f.name == s.name) out[s.name] = {begin + s.offset - f.offset, s.numel, f.numel};
  }
  return out;
}

std::map<std::string, Tensor> ShardedParameters::parameter_stretches() const {
  std::map<std::string, Tensor> out;
  for (const nn::FlatParameters& shard : shards_)
    for (const auto& s : shard.slots) out[s.name] = shard.data.as_strided({s.numel}, {1}, s.offset);
  return out;
}

int64_t ShardedParameters::shard_bytes() const {
  int64_t bytes = 0;
  for (const nn::FlatParameters& s : shards_) bytes += int64_t(s.data.nbytes() + s.grad.nbytes());
  return bytes;
}

}  // namespace automodel::distributed
