#pragma once
// Tensor: a shared handle to (storage, shape, strides, offset, dtype) plus the autograd metadata
// the ops layer fills in. Views share storage; nothing here records gradients — the differentiable
// versions of views live in ops/.
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/storage.h"

namespace automodel {

using Shape = std::vector<int64_t>;

struct Node;  // autograd graph node, core/grad_node.h
struct TensorImpl;

std::string shape_str(const Shape& shape);
// Sizes are overflow-checked: a negative dimension, or a count, byte size or stride beyond 64 bits, is an Error
// naming the shape (never a wrapped-around number).
int64_t shape_numel(const Shape& shape);
size_t shape_nbytes(const Shape& shape, DType dtype);  // numel x element size, at most INT64_MAX
Shape contiguous_strides(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Factories, on `device` through its allocator and fill (core/device_memory.h). Contents of empty() are
  // uninitialised.
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = cpu_device());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = cpu_device());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = cpu_device());
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = cpu_device()) {
    return full(shape, 1.0, dtype, device);
  }
  // Copies `values` (converted from double) into a new contiguous tensor of `dtype`.
  static Tensor from_values(const std::vector<double>& values, const Shape& shape, DType dtype = DType::f32,
                            Device device = cpu_device());
  // A CPU tensor holding `values`.
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
  static Tensor scalar(double value, DType dtype = DType::f32, Device device = cpu_device()) {
    return from_values({value}, {}, dtype, device);
  }

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t offset() const;
  int64_t dim() const { return int64_t(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  size_t nbytes() const;
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const;

  // Pointer to the first element (offset applied); T must match dtype().
  template <class T>
  T* data() const {
    check_dtype(dtype_of<T>::value);
    return reinterpret_cast<T*>(raw_data());
  }
  void* raw_data() const;

  // A view sharing storage, without autograd. Bounds are checked against the storage.
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const;

  // Element values converted to double / float, in row-major order of the logical shape (read through the host
  // when the tensor lives on another device).
  std::vector<double> to_doubles() const;
  std::vector<float> to_floats() const;
  double item() const;

  // Autograd metadata.
  bool requires_grad() const;
  // Marks a leaf as needing a gradient; an error on a non-leaf.
  Tensor& set_requires_grad(bool on);
  bool is_leaf() const;
  Tensor grad() const;
  void set_grad(const Tensor& g) const;
  const std::shared_ptr<Node>& grad_fn() const;
  uint32_t output_nr() const;
  // Same data, no history, requires_grad false.
  Tensor detach() const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }
  std::string describe() const;  // "f32[2, 3]"

 private:
  void check_dtype(DType expected) const;
  void check_defined() const;
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;       // in elements
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;

  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;           // set on outputs of recorded ops
  uint32_t output_nr = 0;                  // which output of grad_fn this is
  std::shared_ptr<Node> grad_accumulator;  // leaves: the node that accumulates into grad
};

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  Tensor t = empty(shape, dtype_of<T>::value);
  AM_CHECK(int64_t(values.size()) == t.numel(), "from_vector: ", values.size(), " values for shape ", shape_str(shape));
  T* p = t.data<T>();
  for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  return t;
}

}  // namespace automodel
