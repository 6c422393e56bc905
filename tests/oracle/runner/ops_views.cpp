// Oracle entries for views and layout changes.
#include "ops/view.h"
#include "registry.h"

namespace automodel::oracle {

ORACLE_OP("reshape", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::reshape(c.in("x"), c.params["shape"].get<Shape>())};
});
ORACLE_OP("permute", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::permute(c.in("x"), c.params["dims"].get<std::vector<int64_t>>())};
});
ORACLE_OP("transpose", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::transpose(c.in("x"), c.params["dim0"], c.params["dim1"])};
});
ORACLE_OP("slice", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::slice(c.in("x"), c.params["dim"], c.params["start"], c.params["end"], c.params.value("step", 1))};
});
// A view of a view, made contiguous: exercises strided copies.
ORACLE_OP("permute_slice_contiguous", [](const OpCall& c) -> std::vector<Tensor> {
  Tensor p = ops::permute(c.in("x"), c.params["dims"].get<std::vector<int64_t>>());
  return {ops::contiguous(ops::slice(p, c.params["dim"], c.params["start"], c.params["end"], c.params["step"]))};
});

}  // namespace automodel::oracle
