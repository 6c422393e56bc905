#include "ops/concat.h"

#include "ops/backend.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

// outer = product of sizes before d, inner = product after d.
void outer_inner(const Shape& shape, int64_t d, int64_t& outer, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int64_t i = 0; i < int64_t(shape.size()); ++i) {
    if (i < d) outer *= shape[size_t(i)];
    if (i > d) inner *= shape[size_t(i)];
  }
}

// Cuts contiguous `src` along d into new contiguous pieces of the given sizes (null where !want[k]).
std::vector<Tensor> cut(const Tensor& src, int64_t d, const std::vector<int64_t>& sizes,
                        const std::vector<bool>& want) {
  int64_t outer, inner;
  outer_inner(src.shape(), d, outer, inner);
  std::vector<Tensor> pieces(sizes.size());
  std::vector<void*> ptrs(sizes.size(), nullptr);
  for (size_t k = 0; k < sizes.size(); ++k) {
    if (!want[k]) continue;
    Shape s = src.shape();
    s[size_t(d)] = sizes[k];
    pieces[k] = Tensor::empty(s, src.dtype(), src.device());
    ptrs[k] = pieces[k].raw_data();
  }
  backend_of("split", src)
      .concat_backward(src.raw_data(), sizes.data(), int(sizes.size()), ptrs.data(), outer, inner,
                       dtype_size(src.dtype()));
  return pieces;
}

// Joins contiguous pieces along d into a new tensor of `shape`.
Tensor join(const std::vector<Tensor>& pieces, int64_t d, const Shape& shape, DType dtype) {
  int64_t outer, inner;
  outer_inner(shape, d, outer, inner);
  const kernels::Backend& be = backend_of("concat", pieces[0]);
  Tensor out = Tensor::empty(shape, dtype, pieces[0].device());
  std::vector<const void*> ptrs;
  std::vector<int64_t> sizes;
  for (const Tensor& p : pieces) {
    check_same_device(pieces[0], p, "concat");
    ptrs.push_back(p.raw_data());
    sizes.push_back(p.shape()[size_t(d)]);
  }
  be.concat_forward(ptrs.data(), sizes.data(), int(ptrs.size()), out.raw_data(), outer, inner, dtype_size(dtype));
  return out;
}

struct ConcatBackward : Node {
  int64_t dim;
  std::vector<int64_t> sizes;
  std::string name() const override { return "ConcatBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    std::vector<bool> want(sizes.size());
    for (size_t k = 0; k < sizes.size(); ++k) want[k] = next_edges[k].fn != nullptr;
    return cut(contiguous(grads[0]), dim, sizes, want);
  }
};

struct SplitBackward : Node {
  int64_t dim;
  Shape input_shape;
  std::string name() const override { return "SplitBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    // The engine passes zeros for pieces that got no gradient, so every grad is defined.
    std::vector<Tensor> pieces;
    for (Tensor& g : grads) pieces.push_back(contiguous(g));
    return {join(pieces, dim, input_shape, pieces[0].dtype())};
  }
};

struct GatherBackward : Node {
  int64_t dim;
  Shape input_shape;
  Tensor index;
  std::string name() const override { return "GatherBackward"; }
  void release_saved() override { index = Tensor(); }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(index.defined(), "GatherBackward: saved index already released (backward run twice?)");
    Tensor g = contiguous(grads[0]);
    AM_CHECK(g.shape() == index.shape(), "GatherBackward: gradient ", g.describe(), " for an index of shape ",
             shape_str(index.shape()));
    const kernels::Backend& be = backend_of("gather", g, index);
    dispatch_floating(g.dtype(), "gather", [](auto) {});
    Tensor gx = Tensor::empty(input_shape, g.dtype(), g.device());
    be.gather_backward(g.dtype(), g.raw_data(), index.data<int64_t>(), gx.raw_data(), gx.strides().data(), gx.numel(),
                       index.shape().data(), int(index.dim()), int(dim));
    return {gx};
  }
};

}  // namespace

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  AM_CHECK(!xs.empty(), "concat: no tensors to concatenate");
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!xs[i].defined()) throw Error(detail::str("concat: tensor ", i, " is undefined"), "concat");
    check_same_device(xs[0], xs[i], "concat");
  }
  backend_of("concat", xs[0]);
  const Tensor& x0 = xs[0];
  if (x0.dim() == 0)
    throw Error("concat: zero-dimensional tensors cannot be concatenated", "concat", "unsqueeze them first");
  const int64_t d = normalize_dim(dim, x0.dim(), "concat");
  Shape shape = x0.shape();
  shape[size_t(d)] = 0;
  std::vector<Tensor> parts;
  std::vector<int64_t> sizes;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    if (x.dtype() != x0.dtype())
      throw Error(detail::str("concat: tensor ", i, " is ", x.describe(), " but tensor 0 is ", x0.describe()), "concat",
                  "cast them to one dtype with ops::to_dtype");
    bool ok = x.dim() == x0.dim();
    for (int64_t k = 0; ok && k < x.dim(); ++k) ok = k == d || x.shape()[size_t(k)] == x0.shape()[size_t(k)];
    if (!ok)
      throw Error(detail::str("concat: tensor ", i, " has shape ", shape_str(x.shape()), ", tensor 0 has ",
                              shape_str(x0.shape()), "; all sizes but dim ", dim, " must match"),
                  "concat");
    shape[size_t(d)] += x.shape()[size_t(d)];
    parts.push_back(contiguous(x));
    sizes.push_back(x.shape()[size_t(d)]);
  }
  Tensor out = join(parts, d, shape, x0.dtype());
  bool grad = false;
  for (const Tensor& p : parts) grad = grad || needs_grad(p);
  if (grad) {
    auto node = std::make_shared<ConcatBackward>();
    node->dim = d;
    node->sizes = sizes;
    record(node, parts, {out});
  }
  return out;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  check_defined(x, "split", "x");
  backend_of("split", x);
  const int64_t d = normalize_dim(dim, x.dim(), "split");
  AM_CHECK(!sizes.empty(), "split: no sizes given");
  int64_t total = 0;
  for (int64_t s : sizes) {
    if (s < 0) throw Error(detail::str("split: negative size ", s, " in ", shape_str(sizes)), "split");
    total += s;
  }
  if (total != x.shape()[size_t(d)])
    throw Error(detail::str("split: sizes ", shape_str(sizes), " add up to ", total, " but dim ", dim, " of ",
                            x.describe(), " has size ", x.shape()[size_t(d)]),
                "split");
  // The pieces are views of x (no copy), one node with one output per piece.
  std::vector<Tensor> outs;
  int64_t start = 0;
  for (int64_t s : sizes) {
    Shape shape = x.shape();
    shape[size_t(d)] = s;
    outs.push_back(x.as_strided(shape, x.strides(), x.offset() + start * x.strides()[size_t(d)]));
    start += s;
  }
  if (needs_grad(x)) {
    auto node = std::make_shared<SplitBackward>();
    node->dim = d;
    node->input_shape = x.shape();
    record(node, {x}, outs);
  }
  return outs;
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  check_defined(x, "gather", "x");
  check_defined(index, "gather", "index");
  const kernels::Backend& be = backend_of("gather", x, index);
  if (index.dtype() != DType::i64)
    throw Error(detail::str("gather: index must be i64, got ", index.describe()), "gather",
                "convert the indices to int64");
  if (x.dim() == 0) throw Error("gather: x must have at least one dim", "gather");
  if (index.dim() != x.dim())
    throw Error(detail::str("gather: index ", index.describe(), " and x ", x.describe(), " differ in rank"), "gather");
  const int64_t d = normalize_dim(dim, x.dim(), "gather");
  for (int64_t k = 0; k < x.dim(); ++k)
    if (k != d && index.shape()[size_t(k)] > x.shape()[size_t(k)])
      throw Error(detail::str("gather: index ", shape_str(index.shape()), " is larger than x ", shape_str(x.shape()),
                              " at dim ", k, " (only dim ", dim, " may differ freely)"),
                  "gather");
  Tensor ic = contiguous(index);
  const int64_t* ip = ic.data<int64_t>();
  const int64_t size = x.shape()[size_t(d)];
  int64_t bad_value = 0;
  const int64_t bad = be.first_bad_index(DType::i64, ip, ic.numel(), size, &bad_value);
  if (bad >= 0)
    throw Error(detail::str("gather: index value ", bad_value, " at flat position ", bad, " is out of range [0, ", size,
                            ") for dim ", dim, " of ", x.describe()),
                "gather");
  Tensor xc = contiguous(x);
  Tensor out = Tensor::empty(index.shape(), x.dtype(), x.device());
  be.gather_forward(xc.raw_data(), xc.strides().data(), ip, out.raw_data(), ic.shape().data(), int(ic.dim()), int(d),
                    dtype_size(x.dtype()));
  if (needs_grad(xc)) {
    auto node = std::make_shared<GatherBackward>();
    node->dim = d;
    node->input_shape = x.shape();
    node->index = ic.detach();
    record(node, {xc}, {out});
  }
  return out;
}

}  // namespace automodel::ops
