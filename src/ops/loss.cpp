#include "ops/loss.h"

#include <algorithm>
#include <limits>

#include "core/device_memory.h"
#include "ops/backend.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

struct CrossEntropyBackward : Node {
  Tensor logits, labels, stats;  // contiguous; stats [N, 2] (max, log-sum-exp) in the compute type
  Reduction reduction = Reduction::mean;
  int64_t ignore_index = -100, count = 0;
  std::string name() const override { return "CrossEntropyBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(grads[0].dtype() == outputs[0].dtype, "cross_entropy backward: gradient ", grads[0].describe(), " for a ",
             dtype_name(outputs[0].dtype), " output");
    Tensor g = contiguous(grads[0]);
    AM_CHECK(g.shape() == outputs[0].shape, "cross_entropy backward: gradient ", g.describe(),
             " for an output of shape ", shape_str(outputs[0].shape));
    const kernels::Backend& be = backend_of("cross_entropy backward", logits, g);
    const int64_t rows = logits.size(0), vocab = logits.size(1);
    Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
    const int64_t stride = reduction == Reduction::none ? 1 : 0;
    // Mean with every label ignored: all rows are ignored, so the scale is never used.
    const double scale = reduction == Reduction::mean ? 1.0 / double(count > 0 ? count : 1) : 1.0;
    be.cross_entropy_backward(logits.dtype(), logits.raw_data(), labels.data<int64_t>(), stats.raw_data(), g.raw_data(),
                              stride, scale, rows, vocab, ignore_index, dlogits.raw_data());
    return {dlogits};
  }
  void release_saved() override { logits = labels = stats = Tensor(); }
};

struct ChunkedCrossEntropyBackward : Node {
  Tensor logits, labels;  // contiguous [N, V] and [N]
  int64_t chunk = 32, ignore_index = -100;
  double scale = 1.0;
  std::string name() const override { return "ChunkedCrossEntropyBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    const double g = grads[0].to_doubles().at(0) * scale;
    const kernels::Backend& be = backend_of("chunked_cross_entropy backward", logits, labels);
    const int64_t rows = logits.size(0), vocab = logits.size(1);
    const DType dt = logits.dtype(), stats_dt = dt == DType::f64 ? DType::f64 : DType::f32;
    const size_t row_bytes = size_t(vocab) * dtype_size(dt);
    Tensor dlogits = Tensor::empty(logits.shape(), dt, logits.device());
    const int64_t m = std::min(chunk, rows);
    Tensor loss = Tensor::empty({m}, stats_dt, logits.device());
    Tensor stats = Tensor::empty({m, 2}, stats_dt, logits.device());
    Tensor one = Tensor::ones({1}, dt, logits.device());
    const char* x = static_cast<const char*>(logits.raw_data());
    char* d = static_cast<char*>(dlogits.raw_data());
    const int64_t* lab = labels.data<int64_t>();
    for (int64_t start = 0; start < rows; start += chunk) {
      const int64_t n = std::min(chunk, rows - start);
      be.cross_entropy_forward(dt, x + size_t(start) * row_bytes, lab + start, n, vocab, ignore_index, loss.raw_data(),
                               stats.raw_data());
      be.cross_entropy_backward(dt, x + size_t(start) * row_bytes, lab + start, stats.raw_data(), one.raw_data(), 0, g,
                                n, vocab, ignore_index, d + size_t(start) * row_bytes);
    }
    return {dlogits};
  }
  void release_saved() override { logits = labels = Tensor(); }
};

}  // namespace

Tensor cross_entropy(const Tensor& logits_in, const Tensor& labels_in, Reduction reduction, int64_t ignore_index) {
  const char* op = "cross_entropy";
  check_defined(logits_in, op, "logits");
  check_defined(labels_in, op, "labels");
  const kernels::Backend& be = backend_of(op, logits_in, labels_in);
  if (logits_in.dim() != 2)
    throw Error(detail::str("cross_entropy: logits must be [N, vocab], got ", logits_in.describe()), op,
                "flatten the leading dims with ops::reshape");
  if (labels_in.dtype() != DType::i64)
    throw Error(detail::str("cross_entropy: labels must be i64, got ", labels_in.describe()), op);
  const int64_t rows = logits_in.size(0), vocab = logits_in.size(1);
  if (labels_in.dim() != 1 || labels_in.size(0) != rows)
    throw Error(detail::str("cross_entropy: labels must be [", rows, "] to match logits ", logits_in.describe(),
                            ", got ", labels_in.describe()),
                op);
  Tensor logits = contiguous(logits_in);
  Tensor labels = contiguous(labels_in);
  const int64_t* lab = labels.data<int64_t>();
  int64_t bad = -1;
  const int64_t count = be.count_labels(lab, rows, vocab, ignore_index, &bad);
  if (count < 0) {
    int64_t value = 0;
    device_memory(labels.device()).copy_to_host(&value, lab + bad, sizeof value);
    throw Error(detail::str("cross_entropy: label ", value, " at position ", bad, " is out of range for vocab size ",
                            vocab, " (ignore_index is ", ignore_index, ")"),
                op, "labels must be in [0, vocab size) or equal to ignore_index");
  }
  dispatch_floating(logits.dtype(), op, [](auto) {});
  const DType dt = logits.dtype(), stats_dt = dt == DType::f64 ? DType::f64 : DType::f32;
  Tensor loss = Tensor::empty({rows}, stats_dt, logits.device());
  Tensor stats = Tensor::empty({rows, 2}, stats_dt, logits.device());
  be.cross_entropy_forward(dt, logits.raw_data(), lab, rows, vocab, ignore_index, loss.raw_data(), stats.raw_data());
  Tensor out;
  if (reduction == Reduction::none) {
    out = Tensor::empty({rows}, dt, logits.device());
    be.cast(loss.raw_data(), stats_dt, out.raw_data(), dt, rows);
  } else {
    double total = be.sum_in_order(stats_dt, loss.raw_data(), rows, 0.0);
    if (reduction == Reduction::mean)
      total = count > 0 ? total / double(count) : std::numeric_limits<double>::quiet_NaN();
    out = Tensor::scalar(total, dt, logits.device());  // through float for bf16, as the per-row losses
  }
  if (needs_grad(logits)) {
    auto node = std::make_shared<CrossEntropyBackward>();
    node->logits = logits;
    node->labels = labels;
    node->stats = stats;
    node->reduction = reduction;
    node->ignore_index = ignore_index;
    node->count = count;
    record(node, {logits}, {out});
  }
  return out;
}

Tensor chunked_cross_entropy(const Tensor& logits_in, const Tensor& labels_in, int64_t chunk, int64_t ignore_index,
                             double scale) {
  const char* op = "chunked_cross_entropy";
  check_defined(logits_in, op, "logits");
  check_defined(labels_in, op, "labels");
  const kernels::Backend& be = backend_of(op, logits_in, labels_in);
  dispatch_floating(logits_in.dtype(), op, [](auto) {});
  AM_CHECK(logits_in.dim() == 2 && labels_in.dtype() == DType::i64 && labels_in.dim() == 1 &&
               labels_in.size(0) == logits_in.size(0),
           op, ": logits ", logits_in.describe(), " and labels ", labels_in.describe(),
           " do not fit [N, V] and [N] (i64)");
  AM_CHECK(chunk > 0, op, ": chunk must be > 0, got ", chunk);
  Tensor logits = contiguous(logits_in);
  Tensor labels = contiguous(labels_in);
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  const DType dt = logits.dtype(), stats_dt = dt == DType::f64 ? DType::f64 : DType::f32;
  // The per-row scratch (loss and stats, in the compute type) is one chunk long; the losses add up in row order.
  double total = 0;
  if (rows > 0) {
    const size_t row_bytes = size_t(vocab) * dtype_size(dt);
    Tensor loss = Tensor::empty({std::min(chunk, rows)}, stats_dt, logits.device());
    Tensor stats = Tensor::empty({std::min(chunk, rows), 2}, stats_dt, logits.device());
    const char* x = static_cast<const char*>(logits.raw_data());
    const int64_t* lab = labels.data<int64_t>();
    for (int64_t start = 0; start < rows; start += chunk) {
      const int64_t n = std::min(chunk, rows - start);
      be.cross_entropy_forward(dt, x + size_t(start) * row_bytes, lab + start, n, vocab, ignore_index, loss.raw_data(),
                               stats.raw_data());
      total = be.sum_in_order(stats_dt, loss.raw_data(), n, total);
    }
  }
  Tensor out = Tensor::scalar(total * scale, stats_dt, logits.device());
  if (needs_grad(logits)) {
    auto node = std::make_shared<ChunkedCrossEntropyBackward>();
    node->logits = logits;
    node->labels = labels;
    node->chunk = chunk;
    node->ignore_index = ignore_index;
    node->scale = scale;
    record(node, {logits}, {out});
  }
  return out;
}

}  // namespace automodel::ops
