#include <algorithm>
#include <cmath>
#include <type_traits>

#include "components/loss/cross_entropy.h"
#include "core/error.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/gemm.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::loss {

namespace {

// Elementwise loops shorter than this run on one thread (an OpenMP region costs more than it saves).
constexpr int64_t kParallelMin = int64_t(1) << 16;

// Gradients computed in forward; backward scales them by the upstream gradient of the loss.
struct FusedLinearCrossEntropyBackward : Node {
  Tensor dhidden, dweight;  // undefined when that input needs no gradient
  std::string name() const override { return "FusedLinearCrossEntropyBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    const double g = grads[0].to_doubles().at(0);
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

struct FusedResult {
  double total = 0;
  Tensor dhidden, dweight;
};

// hidden [rows, H], weight [V, H]; per chunk: logits (compute type) = hidden_c @ weight^T, the
// chunk's losses, and when asked dlogits = (softmax - onehot) * scale, d(hidden_c) = dlogits @ weight
// and d(weight) += dlogits^T @ hidden_c (accumulated in the compute type).
template <class T>
FusedResult fused_linear_ce(const T* hidden, const T* weight, const int64_t* labels, int64_t rows, int64_t H, int64_t V,
                            int64_t chunk, int64_t ignore_index, double softcap, double scale, bool want_dh,
                            bool want_dw) {
  using C = compute_t<T>;
  constexpr bool kNarrow = !std::is_same_v<T, C>;  // bf16: gemm inputs must be bf16 again
  const DType tdt = dtype_of<T>::value, cdt = dtype_of<C>::value;
  const bool want_grad = want_dh || want_dw;
  const int64_t m = std::max<int64_t>(1, std::min(chunk, rows));
  FusedResult res;
  Tensor logits = Tensor::empty({m, V}, cdt);
  Tensor loss = Tensor::empty({m}, cdt);
  Tensor stats = Tensor::empty({m, 2}, cdt);
  Tensor dlogits, dlogits_t, dw_acc;
  if (want_grad) dlogits = Tensor::empty({m, V}, cdt);
  if (want_grad && kNarrow) dlogits_t = Tensor::empty({m, V}, tdt);
  if (want_dh) res.dhidden = Tensor::empty({rows, H}, tdt);
  if (want_dw) dw_acc = Tensor::zeros({V, H}, cdt);
  const C one = C(1);
  for (int64_t start = 0; start < rows; start += chunk) {
    const int64_t n = std::min(chunk, rows - start);
    const T* h = hidden + start * H;
    const int64_t* lab = labels + start;
    C* lg = logits.data<C>();
    cpu::gemm(false, true, n, V, H, C(1), h, H, weight, H, C(0), lg, V);
    const C cap = C(softcap);
    if (softcap > 0) {
      const int64_t total = n * V;
#pragma omp parallel for schedule(static) if (total >= kParallelMin)
      for (int64_t i = 0; i < total; ++i) lg[i] = cap * std::tanh(lg[i] / cap);
    }
    cpu::cross_entropy_forward(lg, lab, n, V, ignore_index, loss.data<C>(), stats.data<C>());
    const C* l = loss.data<C>();
    for (int64_t r = 0; r < n; ++r) res.total += double(l[r]);
    if (!want_grad) continue;
    C* dl = dlogits.data<C>();
    cpu::cross_entropy_backward(lg, lab, stats.data<C>(), &one, 0, scale, n, V, ignore_index, dl);
    if (softcap > 0) {  // d(cap * tanh(z / cap)) / dz = 1 - tanh^2 = 1 - (logit / cap)^2
      const int64_t total = n * V;
#pragma omp parallel for schedule(static) if (total >= kParallelMin)
      for (int64_t i = 0; i < total; ++i) {
        const C t = lg[i] / cap;
        dl[i] *= C(1) - t * t;
      }
    }
    const T* dlt;
    if constexpr (kNarrow) {
      T* d = dlogits_t.data<T>();
      const int64_t total = n * V;
#pragma omp parallel for schedule(static) if (total >= kParallelMin)
      for (int64_t i = 0; i < total; ++i) d[i] = from_compute<T>(dl[i]);
      dlt = d;
    } else {
      dlt = dl;
    }
    if (want_dh) cpu::gemm(false, false, n, H, V, C(1), dlt, V, weight, H, C(0), res.dhidden.data<T>() + start * H, H);
    if (want_dw) cpu::gemm(true, false, V, H, n, C(1), dlt, V, h, H, C(1), dw_acc.data<C>(), H);
  }
  if (want_dw) {
    if constexpr (kNarrow) {
      logits = dlogits = dlogits_t = Tensor();
      res.dweight = Tensor::empty({V, H}, tdt);
      T* d = res.dweight.data<T>();
      const C* s = dw_acc.data<C>();
      const int64_t total = V * H;
#pragma omp parallel for schedule(static) if (total >= kParallelMin)
      for (int64_t i = 0; i < total; ++i) d[i] = from_compute<T>(s[i]);
    } else {
      res.dweight = dw_acc;
    }
  }
  return res;
}

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
  if (chunk_len_ > 0) return chunk_len_;
  // Per row: the logits and their gradient in the compute type, plus a bf16 copy of the gradient.
  const size_t compute = dtype == DType::f64 ? 8 : 4;
  const size_t per_row = size_t(std::max<int64_t>(vocab, 1)) * (2 * compute + (dtype == DType::bf16 ? 2 : 0));
  const int64_t fit = int64_t(budget_ / per_row);
  return std::max<int64_t>(1, std::min(fit, std::max<int64_t>(tokens, 1)));
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
  const int64_t rows = hidden.size(0);
  const bool want_dh = ops::needs_grad(hidden), want_dw = ops::needs_grad(weight);
  const int64_t chunk = chunk_rows(rows, V, hidden.dtype());
  Tensor out;
  FusedResult res;
  ops::dispatch_floating(hidden.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    res = fused_linear_ce(hidden.data<T>(), weight.data<T>(), labels.data<int64_t>(), rows, H, V, chunk, ignore_index_,
                          softcap_, scale, want_dh, want_dw);
    out = Tensor::empty({}, dtype_of<C>::value);
    out.data<C>()[0] = C(res.total * scale);
  });
  if (want_dh || want_dw) {
    auto node = std::make_shared<FusedLinearCrossEntropyBackward>();
    node->dhidden = res.dhidden;
    node->dweight = res.dweight;
    res = FusedResult();
    ops::record(node, {hidden, weight}, {out});
  }
  return out;
}

}  // namespace automodel::loss
