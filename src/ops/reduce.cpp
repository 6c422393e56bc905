#include "ops/reduce.h"

#include "ops/backend.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

struct SumBackward : Node {
  Shape input_shape;
  std::vector<uint8_t> reduced;
  double scale = 1.0;
  bool is_mean = false;
  std::string name() const override { return is_mean ? "MeanBackward" : "SumBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    Tensor g = contiguous(grads[0]);
    const kernels::Backend& be = backend_of(is_mean ? "mean backward" : "sum backward", g);
    dispatch_floating(g.dtype(), "sum backward", [](auto) {});
    Tensor gx = Tensor::empty(input_shape, g.dtype(), g.device());
    be.sum_backward(g.dtype(), g.raw_data(), input_shape.data(), int(input_shape.size()), reduced.data(), scale,
                    gx.raw_data());
    return {gx};
  }
};

// Sums x over the dims flagged in `reduced`, times scale, into a tensor of out_shape (whose
// element count is the product of the kept sizes).
Tensor reduce(const Tensor& x, const std::vector<uint8_t>& reduced, const Shape& out_shape, double scale,
              const char* op) {
  const kernels::Backend& be = backend_of(op, x);
  dispatch_floating(x.dtype(), op, [](auto) {});
  Tensor xc = contiguous(x);
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  be.sum_forward(x.dtype(), xc.raw_data(), xc.shape().data(), int(xc.dim()), reduced.data(), scale, out.raw_data());
  if (needs_grad(xc)) {
    auto node = std::make_shared<SumBackward>();
    node->input_shape = x.shape();
    node->reduced = reduced;
    node->scale = scale;
    node->is_mean = std::string(op) == "mean";
    record(node, {xc}, {out});
  }
  return out;
}

Tensor sum_or_mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, bool mean) {
  const char* op = mean ? "mean" : "sum";
  check_defined(x, op, "x");
  const int64_t nd = x.dim();
  std::vector<uint8_t> reduced(size_t(nd), dims.empty() ? 1 : 0);
  for (int64_t d : dims) {
    int64_t i = normalize_dim(d, nd, op);
    AM_CHECK(!reduced[size_t(i)], op, ": dim ", d, " given more than once in the dims of a ", x.describe(), " tensor");
    reduced[size_t(i)] = 1;
  }
  Shape out_shape;
  int64_t count = 1;
  for (int64_t i = 0; i < nd; ++i) {
    if (reduced[size_t(i)]) {
      count *= x.shape()[size_t(i)];
      if (keepdim) out_shape.push_back(1);
    } else {
      out_shape.push_back(x.shape()[size_t(i)]);
    }
  }
  return reduce(x, reduced, out_shape, mean ? 1.0 / double(count) : 1.0, op);
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sum_or_mean(x, dims, keepdim, false);
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sum_or_mean(x, dims, keepdim, true);
}

Tensor sum_to_shape(const Tensor& x, const Shape& shape) {
  check_defined(x, "sum_to_shape", "x");
  if (x.shape() == shape) return x;
  const int64_t nd = x.dim();
  const int64_t lead = nd - int64_t(shape.size());
  auto fail = [&]() {
    throw Error(
        detail::str("sum_to_shape: cannot sum a tensor of shape ", shape_str(x.shape()), " to shape ", shape_str(shape),
                    " (", shape_str(shape), " does not broadcast to ", shape_str(x.shape()), ")"),
        "sum_to_shape");
  };
  if (lead < 0) fail();
  std::vector<uint8_t> reduced(size_t(nd), 0);
  for (int64_t i = 0; i < nd; ++i) {
    if (i < lead) {
      reduced[size_t(i)] = 1;
      continue;
    }
    int64_t want = shape[size_t(i - lead)], have = x.shape()[size_t(i)];
    if (want == have) continue;
    if (want != 1) fail();
    reduced[size_t(i)] = 1;
  }
  return reduce(x, reduced, shape, 1.0, "sum_to_shape");
}

}  // namespace automodel::ops
