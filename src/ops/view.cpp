#include "ops/view.h"

#include <numeric>

#include "ops/backend.h"
#include "ops/dispatch.h"
#include "ops/graph.h"

namespace automodel::ops {

namespace {

struct ReshapeBackward : Node {
  Shape input_shape;
  std::string name() const override { return "ReshapeBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override { return {reshape(g[0], input_shape)}; }
};

struct PermuteBackward : Node {
  std::vector<int64_t> inverse;
  std::string name() const override { return "PermuteBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override { return {permute(g[0], inverse)}; }
};

struct SliceBackward : Node {
  Shape input_shape;
  int64_t dim, start, step;
  std::string name() const override { return "SliceBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    Tensor gx = Tensor::zeros(input_shape, g[0].dtype(), g[0].device());
    Tensor region = slice(gx, dim, start, start + g[0].size(dim) * step, step);
    copy_into(region, g[0]);
    return {gx};
  }
};

struct IdentityBackward : Node {
  std::string name() const override { return "CopyBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override { return {g[0]}; }
};

Tensor copy_to_contiguous(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  copy_into(out, x);
  return out;
}

}  // namespace

void copy_into(const Tensor& dst, const Tensor& src) {
  AM_CHECK(dst.shape() == src.shape(), "copy_into: shape ", shape_str(src.shape()), " into ", shape_str(dst.shape()));
  AM_CHECK(dst.dtype() == src.dtype(), "copy_into: dtype ", dtype_name(src.dtype()), " into ", dtype_name(dst.dtype()));
  backend_of("copy_into", dst, src)
      .strided_copy(src.raw_data(), src.strides().data(), dst.raw_data(), dst.strides().data(), src.shape().data(),
                    int(src.dim()), dtype_size(src.dtype()));
}

Tensor contiguous(const Tensor& x) {
  check_defined(x, "contiguous", "x");
  if (x.is_contiguous()) return x;
  return clone(x);
}

Tensor clone(const Tensor& x) {
  check_defined(x, "clone", "x");
  Tensor out = copy_to_contiguous(x);
  if (needs_grad(x)) record(std::make_shared<IdentityBackward>(), {x}, {out});
  return out;
}

Tensor reshape(const Tensor& x, Shape shape) {
  check_defined(x, "reshape", "x");
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      AM_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(shape));
      infer = int64_t(i);
    } else {
      AM_CHECK(shape[i] >= 0, "reshape: bad size in ", shape_str(shape));
      AM_CHECK(!__builtin_mul_overflow(known, shape[i], &known), "reshape: size overflows in ", shape_str(shape));
    }
  }
  if (infer >= 0) {
    AM_CHECK(known > 0 && x.numel() % known == 0, "reshape: cannot infer -1 in ", shape_str(shape), " for ", x.numel(),
             " elements");
    shape[size_t(infer)] = x.numel() / known;
  }
  AM_CHECK(shape_numel(shape) == x.numel(), "reshape: shape ", shape_str(shape), " does not fit a tensor of shape ",
           shape_str(x.shape()));
  Tensor src = x.is_contiguous() ? x : copy_to_contiguous(x);
  Tensor out = src.as_strided(shape, contiguous_strides(shape), src.offset());
  if (needs_grad(x)) {
    auto node = std::make_shared<ReshapeBackward>();
    node->input_shape = x.shape();
    record(node, {x}, {out});
  }
  return out;
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  check_defined(x, "permute", "x");
  int64_t n = x.dim();
  AM_CHECK(int64_t(dims.size()) == n, "permute: ", dims.size(), " dims for a rank-", n, " tensor");
  std::vector<int64_t> d(dims.size()), inverse(dims.size());
  std::vector<bool> seen(size_t(n), false);
  Shape shape(static_cast<size_t>(n)), strides(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    d[size_t(i)] = normalize_dim(dims[size_t(i)], n, "permute");
    AM_CHECK(!seen[size_t(d[size_t(i)])], "permute: repeated dim ", dims[size_t(i)]);
    seen[size_t(d[size_t(i)])] = true;
    shape[size_t(i)] = x.shape()[size_t(d[size_t(i)])];
    strides[size_t(i)] = x.strides()[size_t(d[size_t(i)])];
    inverse[size_t(d[size_t(i)])] = i;
  }
  Tensor out = x.as_strided(shape, strides, x.offset());
  if (needs_grad(x)) {
    auto node = std::make_shared<PermuteBackward>();
    node->inverse = inverse;
    record(node, {x}, {out});
  }
  return out;
}

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
  check_defined(x, "transpose", "x");
  std::vector<int64_t> dims(size_t(x.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[size_t(normalize_dim(dim0, x.dim(), "transpose"))],
            dims[size_t(normalize_dim(dim1, x.dim(), "transpose"))]);
  return permute(x, dims);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  check_defined(x, "slice", "x");
  int64_t d = normalize_dim(dim, x.dim(), "slice");
  int64_t size = x.shape()[size_t(d)];
  AM_CHECK(step > 0, "slice: step must be positive, got ", step);
  if (start < 0) start += size;
  if (end < 0) end += size;
  start = std::clamp<int64_t>(start, 0, size);
  end = std::clamp<int64_t>(end, start, size);
  Shape shape = x.shape(), strides = x.strides();
  shape[size_t(d)] = (end - start + step - 1) / step;
  strides[size_t(d)] *= step;
  Tensor out = x.as_strided(shape, strides, x.offset() + start * x.strides()[size_t(d)]);
  if (needs_grad(x)) {
    auto node = std::make_shared<SliceBackward>();
    node->input_shape = x.shape();
    node->dim = d;
    node->start = start;
    node->step = step;
    record(node, {x}, {out});
  }
  return out;
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  check_defined(x, "narrow", "x");
  int64_t d = normalize_dim(dim, x.dim(), "narrow");
  AM_CHECK(start >= 0 && length >= 0 && start + length <= x.shape()[size_t(d)], "narrow: [", start, ", ",
           start + length, ") out of range for size ", x.shape()[size_t(d)], " of dim ", dim);
  return slice(x, d, start, start + length);
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  check_defined(x, "unsqueeze", "x");
  int64_t d = normalize_dim(dim, x.dim() + 1, "unsqueeze");
  Shape shape = x.shape();
  shape.insert(shape.begin() + d, 1);
  return reshape(x, shape);
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  check_defined(x, "squeeze", "x");
  int64_t d = normalize_dim(dim, x.dim(), "squeeze");
  AM_CHECK(x.shape()[size_t(d)] == 1, "squeeze: dim ", dim, " has size ", x.shape()[size_t(d)], ", not 1");
  Shape shape = x.shape();
  shape.erase(shape.begin() + d);
  return reshape(x, shape);
}

}  // namespace automodel::ops
