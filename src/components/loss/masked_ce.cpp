#include "components/loss/cross_entropy.h"
#include "core/error.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "ops/dispatch.h"
#include "ops/loss.h"
#include "ops/view.h"

namespace automodel::loss {

namespace detail {

int64_t check_labels(const Tensor& labels_in, int64_t vocab, int64_t ignore_index, const char* op) {
  if (labels_in.dtype() != DType::i64)
    throw Error(automodel::detail::str(op, ": labels must be i64, got ", labels_in.describe()), op);
  Tensor labels = ops::contiguous(labels_in);
  const int64_t* lab = labels.data<int64_t>();
  int64_t count = 0;
  for (int64_t r = 0; r < labels.numel(); ++r) {
    if (lab[r] == ignore_index) continue;
    if (lab[r] < 0 || lab[r] >= vocab)
      throw Error(automodel::detail::str(op, ": label ", lab[r], " at position ", r, " is out of range for vocab size ",
                                         vocab, " (ignore_index is ", ignore_index, ")"),
                  op, "labels must be in [0, vocab size) or equal to ignore_index");
    ++count;
  }
  return count;
}

double loss_scale(std::optional<int64_t> num_label_tokens, int64_t count, const char* op) {
  if (num_label_tokens && *num_label_tokens < 0)
    throw Error(automodel::detail::str(op, ": num_label_tokens must be >= 0, got ", *num_label_tokens), op);
  const int64_t denom = num_label_tokens ? *num_label_tokens : count;
  return denom > 0 ? 1.0 / double(denom) : 0.0;
}

}  // namespace detail

int64_t count_label_tokens(const Tensor& labels_in, int64_t ignore_index) {
  ops::check_defined(labels_in, "count_label_tokens", "labels");
  if (labels_in.dtype() != DType::i64)
    throw Error(automodel::detail::str("count_label_tokens: labels must be i64, got ", labels_in.describe()),
                "count_label_tokens");
  Tensor labels = ops::contiguous(labels_in);
  const int64_t* lab = labels.data<int64_t>();
  int64_t count = 0;
  for (int64_t r = 0; r < labels.numel(); ++r) count += lab[r] != ignore_index ? 1 : 0;
  return count;
}

Tensor MaskedCrossEntropy::operator()(const Tensor& logits, const Tensor& labels,
                                      std::optional<int64_t> num_label_tokens) const {
  const char* op = "MaskedCrossEntropy";
  ops::check_defined(logits, op, "logits");
  ops::check_defined(labels, op, "labels");
  if (logits.dim() < 2 || Shape(logits.shape().begin(), logits.shape().end() - 1) != labels.shape())
    throw Error(automodel::detail::str(op, ": logits must be [..., vocab] with labels of shape [...], got logits ",
                                       logits.describe(), " and labels ", labels.describe()),
                op);
  const int64_t vocab = logits.size(logits.dim() - 1);
  const int64_t count = detail::check_labels(labels, vocab, ignore_index_, op);
  const double scale = detail::loss_scale(num_label_tokens, count, op);
  Tensor x = ops::reshape(logits, {-1, vocab});
  if (fp32_upcast_ && x.dtype() == DType::bf16) x = ops::to_dtype(x, DType::f32);
  Tensor total = ops::cross_entropy(x, ops::reshape(labels, {-1}), ops::Reduction::sum, ignore_index_);
  return ops::scale(total, scale);
}

}  // namespace automodel::loss
