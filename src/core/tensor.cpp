#include "core/tensor.h"

#include <cstring>
#include <limits>

#include "core/device_memory.h"
#include "core/grad_node.h"

namespace automodel {

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {

const char* const kSizeHint =
    "check the sizes this shape was computed from (model config, batch size, sequence length)";

[[noreturn]] void size_overflow(const std::string& what, const Shape& shape) {
  throw Error(what + " of shape " + shape_str(shape) + " overflows 64-bit arithmetic", "tensor size", kSizeHint);
}

}  // namespace

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error("negative dimension in shape " + shape_str(shape), "tensor size", kSizeHint);
    if (__builtin_mul_overflow(n, d, &n)) size_overflow("the element count", shape);
  }
  return n;
}

size_t shape_nbytes(const Shape& shape, DType dtype) {
  size_t bytes = 0;
  if (__builtin_mul_overflow(size_t(shape_numel(shape)), dtype_size(dtype), &bytes) ||
      bytes > size_t(std::numeric_limits<int64_t>::max()))
    size_overflow(std::string("the byte size (") + dtype_name(dtype) + ")", shape);
  return bytes;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    if (shape[i] < 0) throw Error("negative dimension in shape " + shape_str(shape), "tensor size", kSizeHint);
    if (__builtin_mul_overflow(s, shape[i], &s)) size_overflow("a stride", shape);
  }
  return strides;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  Shape strides = contiguous_strides(shape);
  const size_t bytes = shape_nbytes(shape, dtype);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = Storage::allocate(bytes, device);
  impl->shape = shape;
  impl->strides = std::move(strides);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  const uint64_t zero = 0;
  device_memory(device).fill(t.raw_data(), &zero, dtype_size(dtype), t.numel());
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  visit_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T v = from_compute<T>(value);
    device_memory(device).fill(t.raw_data(), &v, sizeof(T), t.numel());
  });
  return t;
}

Tensor Tensor::from_values(const std::vector<double>& values, const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  AM_CHECK(int64_t(values.size()) == t.numel(), "from_values: ", values.size(), " values for shape ", shape_str(shape));
  std::vector<unsigned char> host(t.nbytes());
  visit_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = reinterpret_cast<T*>(host.data());
    for (size_t i = 0; i < values.size(); ++i) p[i] = from_compute<T>(values[i]);
  });
  device_memory(device).copy_from_host(t.raw_data(), host.data(), host.size());
  return t;
}

void Tensor::check_defined() const {
  if (!impl_) throw Error("use of an undefined tensor", "Tensor");
}
const Shape& Tensor::shape() const {
  check_defined();
  return impl_->shape;
}
const Shape& Tensor::strides() const {
  check_defined();
  return impl_->strides;
}
int64_t Tensor::offset() const {
  check_defined();
  return impl_->offset;
}
int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  int64_t i = d < 0 ? d + n : d;
  AM_CHECK(i >= 0 && i < n, "dimension ", d, " out of range for a tensor of shape ", shape_str(shape()));
  return impl_->shape[size_t(i)];
}
int64_t Tensor::numel() const { return shape_numel(shape()); }
size_t Tensor::nbytes() const { return shape_nbytes(shape(), dtype()); }
DType Tensor::dtype() const {
  check_defined();
  return impl_->dtype;
}
Device Tensor::device() const {
  check_defined();
  return impl_->storage->device();
}
const std::shared_ptr<Storage>& Tensor::storage() const {
  check_defined();
  return impl_->storage;
}

bool Tensor::is_contiguous() const {
  const Shape& sh = shape();
  const Shape& st = strides();
  int64_t expected = 1;
  for (size_t i = sh.size(); i-- > 0;) {
    if (sh[i] == 1) continue;
    if (st[i] != expected) return false;
    expected *= sh[i];
  }
  return true;
}

void* Tensor::raw_data() const {
  check_defined();
  return static_cast<char*>(impl_->storage->data()) + impl_->offset * int64_t(dtype_size(impl_->dtype));
}

void Tensor::check_dtype(DType expected) const {
  if (dtype() != expected)
    throw Error(detail::str("tensor has dtype ", dtype_name(dtype()), ", accessed as ", dtype_name(expected)),
                "Tensor::data");
}

Tensor Tensor::as_strided(const Shape& shape, const Shape& strides, int64_t offset) const {
  check_defined();
  AM_CHECK(shape.size() == strides.size(), "as_strided: shape ", shape_str(shape), " and strides ", shape_str(strides),
           " differ in rank");
  const int64_t numel = shape_numel(shape);  // also rejects negative sizes
  int64_t lo = offset, hi = offset;
  for (size_t i = 0; i < shape.size() && numel > 0; ++i) {
    int64_t span = 0;
    if (__builtin_mul_overflow(shape[i] - 1, strides[i], &span) ||
        __builtin_add_overflow(span < 0 ? lo : hi, span, span < 0 ? &lo : &hi))
      size_overflow("the extent of a view with strides " + shape_str(strides), shape);
  }
  if (numel == 0) lo = hi = offset;
  int64_t capacity = int64_t(impl_->storage->nbytes() / dtype_size(impl_->dtype));
  AM_CHECK(lo >= 0 && (numel == 0 || hi < capacity), "as_strided: view ", shape_str(shape), " strides ",
           shape_str(strides), " offset ", offset, " exceeds storage of ", capacity, " elements");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = impl_->dtype;
  return Tensor(std::move(impl));
}

std::vector<double> Tensor::to_doubles() const {
  check_defined();
  const Shape& sh = shape();
  const Shape& st = strides();
  int64_t n = numel();
  std::vector<double> out(static_cast<size_t>(n));
  // Another device's bytes are read through a host copy of the storage.
  std::vector<unsigned char> host;
  const void* data = impl_->storage->data();
  if (!device().is_cpu() && n > 0) {
    host.resize(impl_->storage->nbytes());
    device_memory(device()).copy_to_host(host.data(), data, host.size());
    data = host.data();
  }
  std::vector<int64_t> idx(sh.size(), 0);
  visit_dtype(dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* base = static_cast<const T*>(data) + impl_->offset;
    for (int64_t k = 0; k < n; ++k) {
      int64_t off = 0;
      for (size_t d = 0; d < sh.size(); ++d) off += idx[d] * st[d];
      if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>)
        out[size_t(k)] = double(to_compute(base[off]));
      else
        out[size_t(k)] = double(base[off]);
      for (size_t d = sh.size(); d-- > 0;) {
        if (++idx[d] < sh[d]) break;
        idx[d] = 0;
      }
    }
  });
  return out;
}

std::vector<float> Tensor::to_floats() const {
  std::vector<double> d = to_doubles();
  return std::vector<float>(d.begin(), d.end());
}

double Tensor::item() const {
  AM_CHECK(numel() == 1, "item() needs a one-element tensor, got shape ", shape_str(shape()));
  return to_doubles()[0];
}

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  check_defined();
  AM_CHECK(!impl_->grad_fn, "set_requires_grad on a non-leaf tensor (it was produced by ", impl_->grad_fn->name(),
           "); call detach() first");
  AM_CHECK(!on || is_floating(dtype()), "only floating-point tensors can require gradients, got ", dtype_name(dtype()));
  impl_->requires_grad = on;
  return *this;
}

bool Tensor::is_leaf() const { return !impl_ || !impl_->grad_fn; }
Tensor Tensor::grad() const { return impl_ ? impl_->grad : Tensor(); }
void Tensor::set_grad(const Tensor& g) const {
  check_defined();
  if (g.defined())
    AM_CHECK(g.shape() == shape(), "set_grad: gradient shape ", shape_str(g.shape()), " differs from tensor shape ",
             shape_str(shape()));
  impl_->grad = g;
}
const std::shared_ptr<Node>& Tensor::grad_fn() const {
  check_defined();
  return impl_->grad_fn;
}
uint32_t Tensor::output_nr() const { return impl_ ? impl_->output_nr : 0; }

Tensor Tensor::detach() const {
  check_defined();
  return as_strided(impl_->shape, impl_->strides, impl_->offset);
}

std::string Tensor::describe() const {
  if (!impl_) return "undefined";
  return std::string(dtype_name(dtype())) + shape_str(shape());
}

}  // namespace automodel
