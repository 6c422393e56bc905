#include "ops/binary.h"

#include "ops/backend.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/reduce.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

using kernels::BinaryOp;

const char* op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return "add";
    case BinaryOp::sub: return "sub";
    case BinaryOp::mul: return "mul";
    case BinaryOp::div: return "div";
  }
  return "binary";
}

Shape broadcast_or_throw(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < a.size() ? a[a.size() - 1 - i] : 1;
    int64_t db = i < b.size() ? b[b.size() - 1 - i] : 1;
    if (da != db && da != 1 && db != 1)
      throw Error(detail::str(op, ": shapes ", shape_str(a), " and ", shape_str(b), " cannot be broadcast (size ", da,
                              " vs ", db, " at dim ", -int64_t(i) - 1, ")"),
                  op, "sizes must match or be 1, counting dims from the last");
    out[n - 1 - i] = da == 1 ? db : da;
  }
  return out;
}

// Strides that read t as if it had shape `out` (0 along broadcast dims).
Shape broadcast_strides(const Tensor& t, const Shape& out) {
  Shape st(out.size(), 0);
  const size_t lead = out.size() - size_t(t.dim());
  for (size_t i = 0; i < size_t(t.dim()); ++i)
    if (t.shape()[i] != 1) st[lead + i] = t.strides()[i];
  return st;
}

// a op b into a new contiguous tensor, no autograd.
Tensor compute(const kernels::Backend& be, BinaryOp op, const Tensor& a, const Tensor& b, const Shape& shape) {
  dispatch_floating(a.dtype(), op_name(op), [](auto) {});
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  if (a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous()) {
    be.binary_forward(op, a.dtype(), a.raw_data(), b.raw_data(), out.raw_data(), out.numel());
  } else {
    Shape as = broadcast_strides(a, shape), bs = broadcast_strides(b, shape);
    be.binary_forward_strided(op, a.dtype(), a.raw_data(), as.data(), b.raw_data(), bs.data(), out.raw_data(),
                              shape.data(), int(shape.size()));
  }
  return out;
}

Tensor scaled(const Tensor& x, double factor) {  // x contiguous, no autograd
  const kernels::Backend& be = backend_of("scale", x);
  dispatch_floating(x.dtype(), "scale", [](auto) {});
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  be.scale(x.dtype(), x.raw_data(), factor, out.raw_data(), x.numel());
  return out;
}

struct BinaryBackward : Node {
  BinaryOp op;
  Shape a_shape, b_shape, out_shape;
  Tensor a, b;  // saved only when a gradient needs them (detached)
  std::string name() const override {
    switch (op) {
      case BinaryOp::add: return "AddBackward";
      case BinaryOp::sub: return "SubBackward";
      case BinaryOp::mul: return "MulBackward";
      case BinaryOp::div: return "DivBackward";
    }
    return "BinaryBackward";
  }
  void release_saved() override {
    a = Tensor();
    b = Tensor();
  }
  // Gradient of input `which` (mul / div), summed down to `target`. A bf16 gradient that must be
  // summed is formed in fp32 and rounded once, after the sum.
  Tensor grad_for(const Tensor& g, int which, const Shape& target) const {
    AM_CHECK(a.defined() || b.defined(), name(),
             ": saved inputs already released (backward run twice without retain_graph?)");
    const Tensor& sa = a.defined() ? a : b;  // only the operands the formula reads are saved
    const Tensor& sb = b.defined() ? b : a;
    AM_CHECK(g.dtype() == sa.dtype(), name(), ": gradient ", g.describe(), " for ", sa.describe(), " operands");
    const kernels::Backend& be = backend_of(op_name(op), g, sa, sb);
    Shape as = broadcast_strides(sa, out_shape), bs = broadcast_strides(sb, out_shape);
    const int nd = int(out_shape.size());
    if (g.dtype() == DType::bf16 && target != out_shape) {
      Tensor full = Tensor::empty(out_shape, DType::f32, g.device());
      be.binary_backward(op, which, DType::bf16, DType::f32, g.raw_data(), sa.raw_data(), as.data(), sb.raw_data(),
                         bs.data(), full.raw_data(), out_shape.data(), nd);
      Tensor s = contiguous(sum_to_shape(full, target));
      Tensor out = Tensor::empty(target, DType::bf16, g.device());
      be.cast(s.raw_data(), DType::f32, out.raw_data(), DType::bf16, out.numel());
      return out;
    }
    dispatch_floating(g.dtype(), op_name(op), [](auto) {});
    Tensor full = Tensor::empty(out_shape, g.dtype(), g.device());
    be.binary_backward(op, which, g.dtype(), g.dtype(), g.raw_data(), sa.raw_data(), as.data(), sb.raw_data(),
                       bs.data(), full.raw_data(), out_shape.data(), nd);
    return sum_to_shape(full, target);
  }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    NoGradGuard no_grad;
    Tensor g = contiguous(grads[0]);
    Tensor ga, gb;
    if (next_edges[0].fn) {
      if (op == BinaryOp::add || op == BinaryOp::sub)
        ga = sum_to_shape(g, a_shape);
      else
        ga = grad_for(g, 0, a_shape);
    }
    if (next_edges[1].fn) {
      if (op == BinaryOp::add)
        gb = sum_to_shape(g, b_shape);
      else if (op == BinaryOp::sub)
        gb = scaled(contiguous(sum_to_shape(g, b_shape)), -1.0);
      else
        gb = grad_for(g, 1, b_shape);
    }
    return {ga, gb};
  }
};

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = op_name(op);
  check_defined(a, name, "a");
  check_defined(b, name, "b");
  const kernels::Backend& be = backend_of(name, a, b);
  check_same_dtype(a, b, name);
  Shape shape = broadcast_or_throw(a.shape(), b.shape(), name);
  Tensor out = compute(be, op, a, b, shape);
  if (needs_grad(a, b)) {
    auto node = std::make_shared<BinaryBackward>();
    node->op = op;
    node->a_shape = a.shape();
    node->b_shape = b.shape();
    node->out_shape = shape;
    // mul: ga needs b, gb needs a; div: ga needs b, gb needs a and b.
    if (op == BinaryOp::mul || op == BinaryOp::div) {
      bool ga = needs_grad(a), gb = needs_grad(b);
      if (gb) node->a = a.detach();
      if (ga || (gb && op == BinaryOp::div)) node->b = b.detach();
    }
    record(node, {a, b}, {out});
  }
  return out;
}

struct ScaleBackward : Node {
  double factor;
  std::string name() const override { return "ScaleBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override { return {scaled(contiguous(grads[0]), factor)}; }
};

}  // namespace

Shape broadcast_shapes(const Shape& a, const Shape& b) { return broadcast_or_throw(a, b, "broadcast_shapes"); }

Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::div, a, b); }

Tensor scale(const Tensor& x, double factor) {
  check_defined(x, "scale", "x");
  Tensor xc = contiguous(x);
  Tensor out = scaled(xc, factor);
  if (needs_grad(xc)) {
    auto node = std::make_shared<ScaleBackward>();
    node->factor = factor;
    record(node, {xc}, {out});
  }
  return out;
}

}  // namespace automodel::ops
