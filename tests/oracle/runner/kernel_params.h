#pragma once
// The model kernels a case asks for: params "fused" (use_liger_kernel) and "flash_attention"
// (false: eager attention), both true unless given.
#include "models/language_model.h"
#include "registry.h"

namespace automodel::oracle {

inline models::KernelOptions kernels_from(const OpCall& c) {
  models::KernelOptions k;
  k.fused = c.params.value("fused", true);
  k.flash_attention = c.params.value("flash_attention", true);
  return k;
}

}  // namespace automodel::oracle
