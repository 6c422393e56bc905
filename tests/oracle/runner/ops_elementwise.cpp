// Oracle entries for elementwise arithmetic, reductions, activations, softmax, dropout and
// concat / split / gather.
#include "core/rng.h"
#include "ops/activation.h"
#include "ops/binary.h"
#include "ops/concat.h"
#include "ops/dropout.h"
#include "ops/reduce.h"
#include "ops/softmax.h"
#include "ops/view.h"
#include "registry.h"

namespace automodel::oracle {

ORACLE_OP("add", [](const OpCall& c) -> std::vector<Tensor> { return {ops::add(c.in("a"), c.in("b"))}; });
ORACLE_OP("sub", [](const OpCall& c) -> std::vector<Tensor> { return {ops::sub(c.in("a"), c.in("b"))}; });
ORACLE_OP("mul", [](const OpCall& c) -> std::vector<Tensor> { return {ops::mul(c.in("a"), c.in("b"))}; });
ORACLE_OP("div", [](const OpCall& c) -> std::vector<Tensor> { return {ops::div(c.in("a"), c.in("b"))}; });
ORACLE_OP("scale", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::scale(c.in("x"), c.params["factor"].get<double>())};
});
// Binary op on a transposed first operand (strided reads).
ORACLE_OP("mul_transposed", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::mul(ops::transpose(c.in("a"), 0, 1), c.in("b"))};
});

ORACLE_OP("sum", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::sum(c.in("x"), c.params.value("dims", std::vector<int64_t>{}), c.params.value("keepdim", false))};
});
ORACLE_OP("mean", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::mean(c.in("x"), c.params.value("dims", std::vector<int64_t>{}), c.params.value("keepdim", false))};
});
ORACLE_OP("sum_to_shape", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::sum_to_shape(c.in("x"), c.params["shape"].get<Shape>())};
});

ORACLE_OP("silu", [](const OpCall& c) -> std::vector<Tensor> { return {ops::silu(c.in("x"))}; });
ORACLE_OP("gelu",
          [](const OpCall& c) -> std::vector<Tensor> { return {ops::gelu(c.in("x"), c.params.value("tanh", false))}; });
ORACLE_OP("swiglu", [](const OpCall& c) -> std::vector<Tensor> { return {ops::swiglu(c.in("gate"), c.in("up"))}; });
ORACLE_OP("geglu_tanh",
          [](const OpCall& c) -> std::vector<Tensor> { return {ops::geglu_tanh(c.in("gate"), c.in("up"))}; });
ORACLE_OP("softcap", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::softcap(c.in("x"), c.params["cap"].get<double>())};
});

ORACLE_OP("softmax", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::softmax(c.in("x"), c.params.value("dim", int64_t(-1)))};
});
ORACLE_OP("log_softmax", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::log_softmax(c.in("x"), c.params.value("dim", int64_t(-1)))};
});

// params: p, training, seed, offset (the generator state to draw from).
ORACLE_OP("dropout", [](const OpCall& c) -> std::vector<Tensor> {
  Generator gen;
  gen.set_state({c.params.value("seed", uint64_t(0)), c.params.value("offset", uint64_t(0))});
  return {ops::dropout(c.in("x"), c.params["p"].get<double>(), c.params.value("training", true), gen)};
});

// inputs x0, x1, ... (params n).
ORACLE_OP("concat", [](const OpCall& c) -> std::vector<Tensor> {
  std::vector<Tensor> xs;
  for (int i = 0; i < c.params["n"].get<int>(); ++i) xs.push_back(c.in("x" + std::to_string(i)));
  return {ops::concat(xs, c.params["dim"].get<int64_t>())};
});
ORACLE_OP("split", [](const OpCall& c) -> std::vector<Tensor> {
  return ops::split(c.in("x"), c.params["sizes"].get<std::vector<int64_t>>(), c.params["dim"].get<int64_t>());
});
ORACLE_OP("gather", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::gather(c.in("x"), c.params["dim"].get<int64_t>(), c.in("index"))};
});

}  // namespace automodel::oracle
