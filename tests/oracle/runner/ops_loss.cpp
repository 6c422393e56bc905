// Oracle entries for components/loss: the three cross-entropy variants.
#include <optional>

#include "components/loss/cross_entropy.h"
#include "registry.h"

namespace automodel::oracle {

namespace {

std::optional<int64_t> num_label_tokens(const OpCall& c) {
  if (!c.params.contains("num_label_tokens") || c.params["num_label_tokens"].is_null()) return std::nullopt;
  return c.params["num_label_tokens"].get<int64_t>();
}

}  // namespace

ORACLE_OP("masked_ce", [](const OpCall& c) -> std::vector<Tensor> {
  loss::MaskedCrossEntropy ce(c.params.value("fp32_upcast", true), c.params.value("ignore_index", int64_t(-100)));
  return {ce(c.in("logits"), c.in("labels"), num_label_tokens(c))};
});
ORACLE_OP("chunked_ce", [](const OpCall& c) -> std::vector<Tensor> {
  loss::ChunkedCrossEntropy ce(c.params.value("chunk_len", int64_t(32)), c.params.value("ignore_index", int64_t(-100)));
  return {ce(c.in("logits"), c.in("labels"), num_label_tokens(c))};
});
ORACLE_OP("fused_linear_ce", [](const OpCall& c) -> std::vector<Tensor> {
  loss::FusedLinearCrossEntropy ce(c.params.value("chunk_len", int64_t(0)),
                                   c.params.value("ignore_index", int64_t(-100)), c.params.value("logit_softcap", 0.0));
  return {ce(c.in("hidden"), c.in("weight"), c.in("labels"), num_label_tokens(c))};
});

}  // namespace automodel::oracle
