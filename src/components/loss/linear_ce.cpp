#include <algorithm>
#include <cmath>

#include "components/loss/cross_entropy.h"
#include "core/error.h"
#include "ops/dispatch.h"
#include "ops/linear_cross_entropy.h"
#include "ops/view.h"

namespace automodel::loss {

FusedLinearCrossEntropy::FusedLinearCrossEntropy(int64_t chunk_len, int64_t ignore_index, double logit_softcap,
                                                 size_t chunk_budget_bytes)
    : chunk_len_(chunk_len), ignore_index_(ignore_index), softcap_(logit_softcap), budget_(chunk_budget_bytes) {
  if (chunk_len < 0)
    throw Error(
        automodel::detail::str("FusedLinearCrossEntropy: chunk_len must be >= 0 (0: from the budget), got ", chunk_len),
        "FusedLinearCrossEntropy");
  if (!(logit_softcap >= 0) || !std::isfinite(logit_softcap))
    throw Error(
        automodel::detail::str("FusedLinearCrossEntropy: logit_softcap must be >= 0 (0: none), got ", logit_softcap),
        "FusedLinearCrossEntropy");
}

int64_t FusedLinearCrossEntropy::chunk_rows(int64_t tokens, int64_t vocab, DType dtype) const {
  const int64_t most = std::max<int64_t>(tokens, 1);
  if (chunk_len_ > 0) return std::min(chunk_len_, most);
  // Per row: the logits in the compute type, which the gradient (bf16 or not) then overwrites in place.
  const size_t per_row = size_t(std::max<int64_t>(vocab, 1)) * (dtype == DType::f64 ? 8 : 4);
  const int64_t fit = std::max<int64_t>(1, int64_t(budget_ / per_row));
  // Equal chunks (the kernel splits the label rows evenly too), so the workspace is no larger than used.
  const int64_t chunks = (most + fit - 1) / fit;
  return (most + chunks - 1) / chunks;
}

Tensor FusedLinearCrossEntropy::operator()(const Tensor& hidden_in, const Tensor& weight_in, const Tensor& labels_in,
                                           std::optional<int64_t> num_label_tokens) const {
  const char* op = "FusedLinearCrossEntropy";
  ops::check_defined(hidden_in, op, "hidden");
  ops::check_defined(weight_in, op, "weight");
  ops::check_defined(labels_in, op, "labels");
  if (weight_in.dim() != 2)
    throw Error(automodel::detail::str(op, ": weight must be [vocab, hidden], got ", weight_in.describe()), op);
  const int64_t V = weight_in.size(0), H = weight_in.size(1);
  if (hidden_in.dim() < 2 || hidden_in.size(hidden_in.dim() - 1) != H ||
      Shape(hidden_in.shape().begin(), hidden_in.shape().end() - 1) != labels_in.shape())
    throw Error(automodel::detail::str(
                    op, ": hidden must be [..., ", H, "] (the weight's hidden size) with labels [...], got hidden ",
                    hidden_in.describe(), ", weight ", weight_in.describe(), " and labels ", labels_in.describe()),
                op);
  ops::check_same_dtype(hidden_in, weight_in, op);
  const int64_t count = detail::check_labels(labels_in, V, ignore_index_, op);
  const double scale = detail::loss_scale(num_label_tokens, count, op);
  ops::LinearCrossEntropyOptions o;
  o.chunk = chunk_rows(std::max<int64_t>(count, 1), V, hidden_in.dtype());
  o.ignore_index = ignore_index_;
  o.softcap = softcap_;
  o.scale = scale;
  o.weight_grad_in_place = weight_grad_in_place_;
  return ops::linear_cross_entropy(ops::reshape(hidden_in, {-1, H}), weight_in, ops::reshape(labels_in, {-1}), o);
}

}  // namespace automodel::loss
