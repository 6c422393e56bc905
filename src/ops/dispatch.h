#pragma once
// Small helpers every op uses to check its inputs and pick the kernel instantiation by dtype.
#include <string>

#include "core/error.h"
#include "core/tensor.h"

namespace automodel::ops {

// Calls f(T{}) with T the storage type of a floating dtype the ops support (float, double, bf16).
template <class F>
void dispatch_floating(DType dt, const char* op, F&& f) {
  visit_dtype_among<float, double, bf16>(dt, f, [&] {
    throw Error(detail::str(op, ": unsupported dtype ", dtype_name(dt)), op, "use f32, f64 or bf16 tensors");
  });
}

inline void check_defined(const Tensor& t, const char* op, const char* arg) {
  if (!t.defined()) throw Error(detail::str(op, ": argument '", arg, "' is undefined"), op);
}

inline void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  if (a.dtype() != b.dtype())
    throw Error(detail::str(op, ": dtype mismatch ", a.describe(), " vs ", b.describe()), op,
                "cast one of them with ops::to_dtype");
}

inline int64_t normalize_dim(int64_t d, int64_t ndim, const char* op) {
  int64_t i = d < 0 ? d + ndim : d;
  if (i < 0 || i >= ndim) throw Error(detail::str(op, ": dim ", d, " out of range for rank ", ndim), op);
  return i;
}

}  // namespace automodel::ops
