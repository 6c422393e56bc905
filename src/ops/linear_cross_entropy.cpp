#include "ops/linear_cross_entropy.h"

#include "ops/backend.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

constexpr const char* kOp = "linear_cross_entropy";

// Gradients computed in forward; backward scales them by the upstream gradient of the loss.
struct LinearCrossEntropyBackward : Node {
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
      throw Error(detail::str("FusedLinearCrossEntropy: d(weight) was added into the weight's .grad in forward "
                              "(set_weight_grad_in_place), so the loss's upstream gradient must be 1, got ",
                              g),
                  "FusedLinearCrossEntropy backward",
                  "backpropagate the loss itself, or leave set_weight_grad_in_place off");
    for (Tensor* t : {&dhidden, &dweight}) {
      if (!t->defined() || g == 1.0) continue;
      backend_of(kOp, *t).scale(t->dtype(), t->raw_data(), g, t->raw_data(), t->numel());
    }
    std::vector<Tensor> out{std::move(dhidden), std::move(dweight)};
    dhidden = dweight = Tensor();
    return out;
  }
  void release_saved() override { dhidden = dweight = Tensor(); }
};

}  // namespace

Tensor linear_cross_entropy(const Tensor& hidden_in, const Tensor& weight_in, const Tensor& labels_in,
                            const LinearCrossEntropyOptions& options) {
  check_defined(hidden_in, kOp, "hidden");
  check_defined(weight_in, kOp, "weight");
  check_defined(labels_in, kOp, "labels");
  const kernels::Backend& be = backend_of(kOp, hidden_in, weight_in, labels_in);
  check_same_dtype(hidden_in, weight_in, kOp);
  dispatch_floating(hidden_in.dtype(), kOp, [](auto) {});
  AM_CHECK(hidden_in.dim() == 2 && weight_in.dim() == 2 && hidden_in.size(1) == weight_in.size(1) &&
               labels_in.dtype() == DType::i64 && labels_in.dim() == 1 && labels_in.size(0) == hidden_in.size(0),
           kOp, ": hidden ", hidden_in.describe(), ", weight ", weight_in.describe(), " and labels ",
           labels_in.describe(), " do not fit [N, H], [V, H] and [N] (i64)");
  AM_CHECK(options.chunk >= 1, kOp, ": chunk must be >= 1, got ", options.chunk);
  Tensor hidden = contiguous(hidden_in);
  Tensor weight = contiguous(weight_in);
  Tensor labels = contiguous(labels_in);
  const DType dt = hidden.dtype();
  const bool want_dh = needs_grad(hidden), want_dw = needs_grad(weight);
  kernels::LinearCrossEntropyProblem p;
  p.rows = hidden.size(0), p.hidden = hidden.size(1), p.vocab = weight.size(0);
  p.chunk = options.chunk;
  p.ignore_index = options.ignore_index;
  p.softcap = options.softcap;
  p.grad_scale = options.scale;
  // The workspace comes from the device's allocator like every tensor, so its peak memory is accounted for.
  const size_t ws_bytes = be.linear_cross_entropy_workspace(dt, p, want_dh || want_dw);
  Tensor workspace = Tensor::empty({int64_t((ws_bytes + 7) / 8)}, DType::f64, hidden.device());
  // In place: the weight's existing .grad (a view of a flat gradient buffer) takes d(weight) directly.
  const Tensor w_grad = weight_in.grad();
  const bool in_place = options.weight_grad_in_place && want_dw && weight_in.is_leaf() && w_grad.defined() &&
                        w_grad.is_contiguous() && w_grad.dtype() == dt && w_grad.shape() == weight.shape();
  p.accumulate_dweight = in_place;
  Tensor dhidden = want_dh ? Tensor::empty(hidden.shape(), dt, hidden.device()) : Tensor();
  Tensor dweight = in_place ? w_grad : want_dw ? Tensor::empty(weight.shape(), dt, weight.device()) : Tensor();
  const double total = be.linear_cross_entropy(dt, p, hidden.raw_data(), weight.raw_data(), labels.data<int64_t>(),
                                               want_dh ? dhidden.raw_data() : nullptr,
                                               want_dw ? dweight.raw_data() : nullptr, workspace.raw_data());
  workspace = Tensor();
  Tensor out = Tensor::scalar(total * options.scale, dt == DType::f64 ? DType::f64 : DType::f32, hidden.device());
  if (want_dh || want_dw) {
    auto node = std::make_shared<LinearCrossEntropyBackward>();
    node->dhidden = std::move(dhidden);
    if (in_place) {
      node->weight_grad_added = true;
    } else {
      node->dweight = std::move(dweight);
    }
    record(node, {hidden, weight}, {out});
  }
  return out;
}

}  // namespace automodel::ops
