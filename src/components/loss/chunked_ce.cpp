#include "components/loss/cross_entropy.h"
#include "core/error.h"
#include "ops/dispatch.h"
#include "ops/loss.h"
#include "ops/view.h"

namespace automodel::loss {

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
  if (logits_in.dim() < 2 || Shape(logits_in.shape().begin(), logits_in.shape().end() - 1) != labels_in.shape())
    throw Error(automodel::detail::str(op, ": logits must be [..., vocab] with labels of shape [...], got logits ",
                                       logits_in.describe(), " and labels ", labels_in.describe()),
                op);
  const int64_t vocab = logits_in.size(logits_in.dim() - 1);
  const int64_t count = detail::check_labels(labels_in, vocab, ignore_index_, op);
  const double scale = detail::loss_scale(num_label_tokens, count, op);
  return ops::chunked_cross_entropy(ops::reshape(logits_in, {-1, vocab}), ops::reshape(labels_in, {-1}), chunk_len_,
                                    ignore_index_, scale);
}

}  // namespace automodel::loss
