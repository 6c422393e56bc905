#pragma once
// Language-model cross-entropy losses with NeMo Automodel's semantics (components/loss/masked_ce.py,
// chunked_ce.py, linear_ce.py): labels equal to ignore_index (-100) contribute nothing; the loss is the
// sum over label tokens divided by num_label_tokens when given (the step's count of label tokens
// across gradient-accumulation micro-batches), else by the number of label tokens in `labels` (the
// mean; NeMo's reduction="sum" default would return the plain sum there). A zero denominator gives a zero loss (and
// zero gradients), never NaN. bf16 inputs are computed in fp32 and give an fp32 loss; f32 gives f32, f64 gives f64.
#include <cstddef>
#include <cstdint>
#include <optional>

#include "core/tensor.h"

namespace automodel::loss {

// Number of labels that are not ignore_index (labels must be i64).
int64_t count_label_tokens(const Tensor& labels, int64_t ignore_index = -100);

// logits [B, T, V] or [N, V] (f32, f64, bf16), labels [B, T] or [N] (i64) with the same leading dims.
class MaskedCrossEntropy {
 public:
  explicit MaskedCrossEntropy(bool fp32_upcast = true, int64_t ignore_index = -100)
      : fp32_upcast_(fp32_upcast), ignore_index_(ignore_index) {}
  Tensor operator()(const Tensor& logits, const Tensor& labels,
                    std::optional<int64_t> num_label_tokens = std::nullopt) const;

 private:
  bool fp32_upcast_;
  int64_t ignore_index_;
};

// The same loss computed chunk_len tokens at a time in one autograd node: the fp32 working set is
// one [chunk_len, V] slice; only the logits (in their own dtype) and labels are kept for backward,
// where each chunk's softmax is recomputed.
class ChunkedCrossEntropy {
 public:
  explicit ChunkedCrossEntropy(int64_t chunk_len = 32, int64_t ignore_index = -100);
  Tensor operator()(const Tensor& logits, const Tensor& labels,
                    std::optional<int64_t> num_label_tokens = std::nullopt) const;
  int64_t chunk_len() const { return chunk_len_; }

 private:
  int64_t chunk_len_;
  int64_t ignore_index_;
};

// Cross-entropy of logits = hidden @ weight^T without ever materialising the [N, V] logits (the recipe's
// default loss): hidden [B, T, H] or [N, H], weight [V, H] (the LM head, same dtype), labels [B, T] or [N].
// The label rows (ignored ones cost nothing) are processed in chunks by ops::linear_cross_entropy: per
// chunk the logits in fp32 (f64 for f64), loss, and when hidden or weight needs a gradient d(hidden) and
// d(weight) are computed eagerly in forward, inside one autograd node whose backward only scales them by
// the upstream gradient. A frozen weight (requires_grad false, e.g. LoRA's tied embedding) gets no
// gradient and costs no d(weight) work; under NoGradGuard only the loss is computed.
// chunk_len 0 picks the largest chunk whose logits fit chunk_budget_bytes: the working set stays
// bounded whatever the number of tokens.
// logit_softcap > 0 applies final-logit soft-capping (Gemma 2's final_logit_softcapping) before the
// loss: logits = cap * tanh((hidden @ weight^T) / cap).
class FusedLinearCrossEntropy {
 public:
  explicit FusedLinearCrossEntropy(int64_t chunk_len = 0, int64_t ignore_index = -100, double logit_softcap = 0.0,
                                   size_t chunk_budget_bytes = size_t(64) << 20);
  Tensor operator()(const Tensor& hidden, const Tensor& weight, const Tensor& labels,
                    std::optional<int64_t> num_label_tokens = std::nullopt) const;
  // The chunk of rows used for `tokens` label rows against a vocabulary of `vocab` in `dtype`.
  int64_t chunk_rows(int64_t tokens, int64_t vocab, DType dtype) const;
  // A training step's mode: when the weight is a leaf whose .grad buffer already exists (the recipe's flat
  // gradient buffers), d(weight) is added into that buffer during forward, as the masked path's LM-head
  // backward adds into it, instead of living in a [V, H] temporary until backward. The loss must then be
  // backpropagated once with upstream gradient 1 (backward(loss)); its backward throws otherwise.
  FusedLinearCrossEntropy& set_weight_grad_in_place(bool on) {
    weight_grad_in_place_ = on;
    return *this;
  }

 private:
  int64_t chunk_len_;
  int64_t ignore_index_;
  double softcap_;
  size_t budget_;
  bool weight_grad_in_place_ = false;
};

namespace detail {
// Checks labels (i64, values ignore_index or in [0, vocab)) and returns the count of label tokens.
int64_t check_labels(const Tensor& labels, int64_t vocab, int64_t ignore_index, const char* op);
// 1 / denominator (num_label_tokens if given, else count), or 0 when the denominator is 0.
double loss_scale(std::optional<int64_t> num_label_tokens, int64_t count, const char* op);
}  // namespace detail

}  // namespace automodel::loss
