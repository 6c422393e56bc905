// Oracle entry for scaled dot-product attention (flash-style tiled kernel).
#include "ops/attention.h"
#include "registry.h"

namespace automodel::oracle {

// inputs q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv], optional seq_ids [B, Tk];
// params scale (0: 1/sqrt(D)), causal, window, softcap.
ORACLE_OP("attention", [](const OpCall& c) -> std::vector<Tensor> {
  ops::AttentionOptions o;
  o.scale = c.params.value("scale", 0.0);
  o.causal = c.params.value("causal", true);
  o.window = c.params.value("window", int64_t(0));
  o.softcap = c.params.value("softcap", 0.0);
  o.seq_ids = c.maybe("seq_ids");
  return {ops::attention(c.in("q"), c.in("k"), c.in("v"), o)};
});

}  // namespace automodel::oracle
