// Oracle entries for the layer ops: embedding, rms_norm, layer_norm, rope, cross_entropy.
#include "ops/embedding.h"
#include "ops/loss.h"
#include "ops/norm.h"
#include "ops/rope.h"
#include "registry.h"

namespace automodel::oracle {

ORACLE_OP("embedding", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::embedding(c.in("ids"), c.in("weight"), c.params.value("padding_idx", int64_t(-1)))};
});
// weight optional; params: eps, unit_offset.
ORACLE_OP("rms_norm", [](const OpCall& c) -> std::vector<Tensor> {
  return {
      ops::rms_norm(c.in("x"), c.maybe("weight"), c.params.value("eps", 1e-6), c.params.value("unit_offset", false))};
});
// weight and bias optional; params: eps.
ORACLE_OP("layer_norm", [](const OpCall& c) -> std::vector<Tensor> {
  return {ops::layer_norm(c.in("x"), c.maybe("weight"), c.maybe("bias"), c.params.value("eps", 1e-5))};
});
// params: style ("half" | "interleaved"), attention_scaling.
ORACLE_OP("rope", [](const OpCall& c) -> std::vector<Tensor> {
  std::string style = c.params.value("style", std::string("half"));
  AM_CHECK(style == "half" || style == "interleaved", "rope: unknown style '", style, "'");
  return {ops::rope(c.in("x"), c.in("position_ids"), c.in("inv_freq"),
                    style == "half" ? ops::RopeStyle::half : ops::RopeStyle::interleaved,
                    c.params.value("attention_scaling", 1.0))};
});
// params: reduction ("none" | "sum" | "mean"), ignore_index.
ORACLE_OP("cross_entropy", [](const OpCall& c) -> std::vector<Tensor> {
  std::string r = c.params.value("reduction", std::string("mean"));
  ops::Reduction red = r == "none" ? ops::Reduction::none : r == "sum" ? ops::Reduction::sum : ops::Reduction::mean;
  AM_CHECK(r == "none" || r == "sum" || r == "mean", "cross_entropy: unknown reduction '", r, "'");
  return {ops::cross_entropy(c.in("logits"), c.in("labels"), red, c.params.value("ignore_index", int64_t(-100)))};
});

}  // namespace automodel::oracle
