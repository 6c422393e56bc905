#include <algorithm>
#include <cmath>

#include "components/loss/cross_entropy.h"
#include "core/error.h"
#include "kernels/cpu/linear_cross_entropy.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::loss {

namespace {

// Elementwise loops shorter than this run on one thread (an OpenMP region costs more than it saves).
constexpr int64_t kParallelMin = int64_t(1) << 16;

// Gradients computed in forward; backward scales them by the upstream gradient of the loss.
struct FusedLinearCrossEntropyBackward : Node {
  Tensor dhidden, dweight;         // undefined when that input needs no gradient
  bool weight_grad_added = false;  // d(weight) already added into the weight's .grad in forward
  bool applied = false;
  std::string name() const override { return "FusedLinearCrossEntropyBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    const double g = grads[0].to_doubles().at(0);
    if (weight_grad_added && applied)
      throw Error(
          "FusedLinearCrossEntropy: backward ran twice, but d(weight) was added into the weight's .grad once, "
          "in forward (set_weight_grad_in_place)",
          "FusedLinearCrossEntropy backward", "leave set_weight_grad_in_place off to backpropagate twice");
    applied = true;
    if (weight_grad_added && g != 1.0)
      throw Error(automodel::detail::str("FusedLinearCrossEntropy: d(weight) was added into the weight's .grad in "
                                         "forward (set_weight_grad_in_place), so the loss's upstream gradient must be "
                                         "1, got ",
                                         g),
                  "FusedLinearCrossEntropy backward",
                  "backpropagate the loss itself, or leave set_weight_grad_in_place off");
    for (Tensor* t : {&dhidden, &dweight}) {
      if (!t->defined() || g == 1.0) continue;
      ops::dispatch_floating(t->dtype(), "FusedLinearCrossEntropy backward", [&](auto tag) {
        using T = decltype(tag);
        using C = compute_t<T>;
        T* p = t->data<T>();
        const int64_t n = t->numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
        for (int64_t i = 0; i < n; ++i) p[i] = from_compute<T>(C(to_compute(p[i]) * g));
      });
    }
    std::vector<Tensor> out{std::move(dhidden), std::move(dweight)};
    dhidden = dweight = Tensor();
    return out;
  }
  void release_saved() override { dhidden = dweight = Tensor(); }
};

}  // namespace

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
  ops::check_cpu(hidden_in, op);
  ops::check_cpu(weight_in, op);
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
  Tensor hidden = ops::contiguous(ops::reshape(hidden_in, {-1, H}));
  Tensor weight = ops::contiguous(weight_in);
  Tensor labels = ops::contiguous(ops::reshape(labels_in, {-1}));
  const bool want_dh = ops::needs_grad(hidden), want_dw = ops::needs_grad(weight);
  cpu::LinearCrossEntropyProblem p;
  p.rows = hidden.size(0), p.hidden = H, p.vocab = V;
  p.chunk = chunk_rows(std::max<int64_t>(count, 1), V, hidden.dtype());
  p.ignore_index = ignore_index_;
  p.softcap = softcap_;
  p.grad_scale = scale;
  // The workspace comes from the caching allocator like every tensor, so its peak memory is accounted for.
  const size_t ws_bytes = cpu::linear_cross_entropy_workspace(p, hidden.dtype(), want_dh || want_dw);
  Tensor workspace = Tensor::empty({int64_t((ws_bytes + 7) / 8)}, DType::f64);
  // In place: the weight's existing .grad (a view of a flat gradient buffer) takes d(weight) directly.
  const Tensor w_grad = weight_in.grad();
  const bool in_place = weight_grad_in_place_ && want_dw && weight_in.is_leaf() && w_grad.defined() &&
                        w_grad.is_contiguous() && w_grad.dtype() == weight.dtype() && w_grad.shape() == weight.shape();
  p.accumulate_dweight = in_place;
  Tensor dhidden = want_dh ? Tensor::empty(hidden.shape(), hidden.dtype()) : Tensor();
  Tensor dweight = in_place ? w_grad : want_dw ? Tensor::empty(weight.shape(), weight.dtype()) : Tensor();
  Tensor out;
  ops::dispatch_floating(hidden.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    const double total = cpu::linear_cross_entropy(p, hidden.data<T>(), weight.data<T>(), labels.data<int64_t>(),
                                                   want_dh ? dhidden.data<T>() : nullptr,
                                                   want_dw ? dweight.data<T>() : nullptr, workspace.raw_data());
    out = Tensor::empty({}, dtype_of<C>::value);
    out.data<C>()[0] = C(total * scale);
  });
  workspace = Tensor();
  if (want_dh || want_dw) {
    auto node = std::make_shared<FusedLinearCrossEntropyBackward>();
    node->dhidden = std::move(dhidden);
    if (in_place) {
      node->weight_grad_added = true;
    } else {
      node->dweight = std::move(dweight);
    }
    ops::record(node, {hidden, weight}, {out});
  }
  return out;
}

}  // namespace automodel::loss
