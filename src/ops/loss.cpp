#include "ops/loss.h"

#include <limits>

#include "kernels/cpu/cross_entropy.h"
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
    const int64_t rows = logits.size(0), vocab = logits.size(1);
    Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype());
    const int64_t stride = reduction == Reduction::none ? 1 : 0;
    // Mean with every label ignored: all rows are ignored, so the scale is never used.
    const double scale = reduction == Reduction::mean ? 1.0 / double(count > 0 ? count : 1) : 1.0;
    dispatch_floating(logits.dtype(), "cross_entropy backward", [&](auto tag) {
      using T = decltype(tag);
      using C = compute_t<T>;
      cpu::cross_entropy_backward(logits.data<T>(), labels.data<int64_t>(), stats.data<C>(), g.data<T>(), stride, scale,
                                  rows, vocab, ignore_index, dlogits.data<T>());
    });
    return {dlogits};
  }
  void release_saved() override { logits = labels = stats = Tensor(); }
};

}  // namespace

Tensor cross_entropy(const Tensor& logits_in, const Tensor& labels_in, Reduction reduction, int64_t ignore_index) {
  const char* op = "cross_entropy";
  check_defined(logits_in, op, "logits");
  check_defined(labels_in, op, "labels");
  check_cpu(logits_in, op);
  check_cpu(labels_in, op);
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
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (lab[r] == ignore_index) continue;
    if (lab[r] < 0 || lab[r] >= vocab)
      throw Error(detail::str("cross_entropy: label ", lab[r], " at position ", r, " is out of range for vocab size ",
                              vocab, " (ignore_index is ", ignore_index, ")"),
                  op, "labels must be in [0, vocab size) or equal to ignore_index");
    ++count;
  }
  Tensor out;
  Tensor stats;
  dispatch_floating(logits.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    Tensor loss = Tensor::empty({rows}, dtype_of<C>::value);
    stats = Tensor::empty({rows, 2}, dtype_of<C>::value);
    cpu::cross_entropy_forward(logits.data<T>(), lab, rows, vocab, ignore_index, loss.data<C>(), stats.data<C>());
    const C* l = loss.data<C>();
    if (reduction == Reduction::none) {
      out = Tensor::empty({rows}, logits.dtype());
      T* o = out.data<T>();
      for (int64_t r = 0; r < rows; ++r) o[r] = from_compute<T>(l[r]);
    } else {
      double total = 0;
      for (int64_t r = 0; r < rows; ++r) total += double(l[r]);
      if (reduction == Reduction::mean)
        total = count > 0 ? total / double(count) : std::numeric_limits<double>::quiet_NaN();
      out = Tensor::empty({}, logits.dtype());
      out.data<T>()[0] = from_compute<T>(C(total));
    }
  });
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

}  // namespace automodel::ops
