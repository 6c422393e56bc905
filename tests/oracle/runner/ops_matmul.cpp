// Oracle entries for matrix products and dtype casts.
#include "ops/cast.h"
#include "ops/matmul.h"
#include "ops/view.h"
#include "registry.h"

namespace automodel::oracle {

ORACLE_OP("matmul", [](const OpCall& c) -> std::vector<Tensor> {
  return {
      ops::matmul(c.in("a"), c.in("b"), c.params.value("transpose_a", false), c.params.value("transpose_b", false))};
});
// matmul of a transposed view of a (strides swapped): exercises the no-copy layout path.
ORACLE_OP("matmul_view_t", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::matmul(ops::transpose(c.in("a"), -1, -2), c.in("b"))};
});
ORACLE_OP("linear", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::linear(c.in("x"), c.in("weight"), c.maybe("bias"))};
});
// x cast to params.to (f32 / f64 / bf16 / f16).
ORACLE_OP("to_dtype", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::to_dtype(c.in("x"), dtype_from_name(c.params["to"]))};
});
// 16-bit patterns sent as int32 ("bits"), reinterpreted as params.from (bf16 / f16), cast to params.to.
ORACLE_OP("to_dtype_from_bits", [](const OpCall& c) -> std::vector<Tensor> {
  const Tensor& bits = c.in("bits");
  DType from = dtype_from_name(c.params["from"]);
  AM_CHECK(from == DType::bf16 || from == DType::f16, "to_dtype_from_bits: from must be bf16 or f16");
  Tensor x = Tensor::empty(bits.shape(), from);
  const int32_t* b = bits.data<int32_t>();
  uint16_t* p = static_cast<uint16_t*>(x.raw_data());
  for (int64_t i = 0; i < x.numel(); ++i) p[i] = uint16_t(b[i]);
  return {ops::to_dtype(x, dtype_from_name(c.params["to"]))};
});
// f32 -> params.to -> bits as int32, so the 16-bit results compare bit for bit (NaN payloads too).
ORACLE_OP("to_dtype_bits", [](const OpCall& c) -> std::vector<Tensor> {
  Tensor y = ops::to_dtype(c.in("x"), dtype_from_name(c.params["to"]));
  AM_CHECK(y.dtype() == DType::bf16 || y.dtype() == DType::f16, "to_dtype_bits: to must be bf16 or f16");
  Tensor bits = Tensor::empty(y.shape(), DType::i32);
  const uint16_t* p = static_cast<const uint16_t*>(y.raw_data());
  int32_t* b = bits.data<int32_t>();
  for (int64_t i = 0; i < y.numel(); ++i) b[i] = p[i];
  return {bits};
});

}  // namespace automodel::oracle
