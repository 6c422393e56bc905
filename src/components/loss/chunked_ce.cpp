#include <algorithm>

#include "components/loss/cross_entropy.h"
#include "core/error.h"
#include "kernels/cpu/cross_entropy.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::loss {

namespace {

// Sum of per-token losses of logits [rows, vocab] (storage T), chunk rows at a time; the per-row
// scratch (loss and stats, in the compute type) is one chunk long.
template <class T>
double chunked_sum(const T* logits, const int64_t* labels, int64_t rows, int64_t vocab, int64_t chunk,
                   int64_t ignore_index) {
  using C = compute_t<T>;
  Tensor loss = Tensor::empty({std::min(chunk, rows)}, dtype_of<C>::value);
  Tensor stats = Tensor::empty({std::min(chunk, rows), 2}, dtype_of<C>::value);
  double total = 0;
  for (int64_t start = 0; start < rows; start += chunk) {
    const int64_t n = std::min(chunk, rows - start);
    cpu::cross_entropy_forward(logits + start * vocab, labels + start, n, vocab, ignore_index, loss.data<C>(),
                               stats.data<C>());
    const C* l = loss.data<C>();
    for (int64_t r = 0; r < n; ++r) total += double(l[r]);
  }
  return total;
}

struct ChunkedCrossEntropyBackward : Node {
  Tensor logits, labels;  // contiguous [N, V] and [N]
  int64_t chunk = 32, ignore_index = -100;
  double scale = 1.0;
  std::string name() const override { return "ChunkedCrossEntropyBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    const double g = grads[0].to_doubles().at(0) * scale;
    const int64_t rows = logits.size(0), vocab = logits.size(1);
    Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype());
    ops::dispatch_floating(logits.dtype(), "ChunkedCrossEntropy backward", [&](auto tag) {
      using T = decltype(tag);
      using C = compute_t<T>;
      const int64_t m = std::min(chunk, rows);
      Tensor loss = Tensor::empty({m}, dtype_of<C>::value);
      Tensor stats = Tensor::empty({m, 2}, dtype_of<C>::value);
      const T one = from_compute<T>(C(1));
      const T* x = logits.data<T>();
      const int64_t* lab = labels.data<int64_t>();
      T* d = dlogits.data<T>();
      for (int64_t start = 0; start < rows; start += chunk) {
        const int64_t n = std::min(chunk, rows - start);
        cpu::cross_entropy_forward(x + start * vocab, lab + start, n, vocab, ignore_index, loss.data<C>(),
                                   stats.data<C>());
        cpu::cross_entropy_backward(x + start * vocab, lab + start, stats.data<C>(), &one, 0, g, n, vocab, ignore_index,
                                    d + start * vocab);
      }
    });
    return {dlogits};
  }
  void release_saved() override { logits = labels = Tensor(); }
};

}  // namespace

ChunkedCrossEntropy::ChunkedCrossEntropy(int64_t chunk_len, int64_t ignore_index)
    : chunk_len_(chunk_len), ignore_index_(ignore_index) {
  if (chunk_len <= 0)
    throw Error(automodel::detail::str("ChunkedCrossEntropy: chunk_len must be > 0, got ", chunk_len),
                "ChunkedCrossEntropy");
}

Tensor ChunkedCrossEntropy::operator()(const Tensor& logits_in, const Tensor& labels_in,
                                       std::optional<int64_t> num_label_tokens) const {
  const char* op = "ChunkedCrossEntropy";
  ops::check_defined(logits_in, op, "logits");
  ops::check_defined(labels_in, op, "labels");
  ops::check_cpu(logits_in, op);
  if (logits_in.dim() < 2 || Shape(logits_in.shape().begin(), logits_in.shape().end() - 1) != labels_in.shape())
    throw Error(automodel::detail::str(op, ": logits must be [..., vocab] with labels of shape [...], got logits ",
                                       logits_in.describe(), " and labels ", labels_in.describe()),
                op);
  const int64_t vocab = logits_in.size(logits_in.dim() - 1);
  const int64_t count = detail::check_labels(labels_in, vocab, ignore_index_, op);
  const double scale = detail::loss_scale(num_label_tokens, count, op);
  Tensor logits = ops::contiguous(ops::reshape(logits_in, {-1, vocab}));
  Tensor labels = ops::contiguous(ops::reshape(labels_in, {-1}));
  const int64_t rows = logits.size(0);
  Tensor out;
  ops::dispatch_floating(logits.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    const double total =
        rows > 0 ? chunked_sum(logits.data<T>(), labels.data<int64_t>(), rows, vocab, chunk_len_, ignore_index_) : 0;
    out = Tensor::empty({}, dtype_of<C>::value);
    out.data<C>()[0] = C(total * scale);
  });
  if (ops::needs_grad(logits)) {
    auto node = std::make_shared<ChunkedCrossEntropyBackward>();
    node->logits = logits;
    node->labels = labels;
    node->chunk = chunk_len_;
    node->ignore_index = ignore_index_;
    node->scale = scale;
    ops::record(node, {logits}, {out});
  }
  return out;
}

}  // namespace automodel::loss
