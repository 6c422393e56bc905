#include "ops/grouped_gemm.h"

#include "ops/backend.h"
#include "ops/cast.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

struct GroupedGemmBackward : Node {
  Tensor x, w;                  // detached, contiguous
  std::vector<int64_t> counts;  // host
  int64_t rows = 0, n = 0, k = 0;
  bool w_transposed = false;
  std::string name() const override { return "GroupedGemmBackward"; }
  void release_saved() override { x = w = Tensor(); }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(x.defined(), name(), ": saved inputs already released (backward run twice?)");
    const bool need_x = next_edges[0].fn != nullptr, need_w = next_edges[1].fn != nullptr;
    if (!grads[0].defined() || (!need_x && !need_w)) return {Tensor(), Tensor()};
    const DType dt = outputs[0].dtype;
    NoGradGuard no_grad;
    Tensor g = grads[0];
    if (g.dtype() != dt) g = to_dtype(g, dt);
    g = contiguous(g);
    const kernels::Backend& be = backend_of("grouped_gemm backward", g, x, w);
    const int64_t groups = int64_t(counts.size());
    Tensor dx = need_x ? Tensor::empty({rows, k}, dt, g.device()) : Tensor();
    Tensor dw = need_w ? Tensor::empty(w.shape(), dt, g.device()) : Tensor();
    be.grouped_gemm_backward(dt, g.raw_data(), x.raw_data(), w.raw_data(), counts.data(), groups, n, k, w_transposed,
                             need_x ? dx.raw_data() : nullptr, need_w ? dw.raw_data() : nullptr);
    return {dx, dw};
  }
};

}  // namespace

Tensor grouped_gemm(const Tensor& x, const Tensor& w, const Tensor& counts, bool w_transposed) {
  check_defined(x, "grouped_gemm", "x");
  check_defined(w, "grouped_gemm", "w");
  check_defined(counts, "grouped_gemm", "counts");
  if (x.dim() != 2 || w.dim() != 3 || x.size(1) != w.size(w_transposed ? 1 : 2))
    throw Error(detail::str("grouped_gemm: x must be [rows, in] and w ",
                            w_transposed ? "[groups, in, out] (transposed)" : "[groups, out, in]", ", got ",
                            x.describe(), " and ", w.describe()),
                "grouped_gemm");
  if (counts.dtype() != DType::i64 || counts.shape() != Shape{w.size(0)})
    throw Error(detail::str("grouped_gemm: counts must be i64 [", w.size(0), "], got ", counts.describe()),
                "grouped_gemm");
  check_same_dtype(x, w, "grouped_gemm");
  dispatch_floating(x.dtype(), "grouped_gemm", [](auto) {});
  std::vector<int64_t> host_counts;
  int64_t total = 0;
  for (double c : counts.to_doubles()) {
    if (c < 0) throw Error(detail::str("grouped_gemm: a group count is negative (", c, ")"), "grouped_gemm");
    host_counts.push_back(int64_t(c));
    total += int64_t(c);
  }
  if (total != x.size(0))
    throw Error(detail::str("grouped_gemm: the group counts sum to ", total, " but x has ", x.size(0), " rows"),
                "grouped_gemm");
  const kernels::Backend& be = backend_of("grouped_gemm", x, w);
  Tensor xc = contiguous(x), wc = contiguous(w);
  const int64_t n = w.size(w_transposed ? 2 : 1), k = x.size(1);
  Tensor y = Tensor::empty({x.size(0), n}, x.dtype(), x.device());
  be.grouped_gemm_forward(x.dtype(), xc.raw_data(), wc.raw_data(), host_counts.data(), w.size(0), n, k, w_transposed,
                          y.raw_data());
  if (needs_grad(xc, wc)) {
    auto node = std::make_shared<GroupedGemmBackward>();
    node->x = xc.detach(), node->w = wc.detach(), node->counts = std::move(host_counts);
    node->rows = x.size(0), node->n = n, node->k = k, node->w_transposed = w_transposed;
    record(node, {xc, wc}, {y});
  }
  return y;
}

}  // namespace automodel::ops
