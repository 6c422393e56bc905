#include "models/state_dict_adapter.h"

#include "core/error.h"

namespace automodel::models {

Tensor StateDictAdapter::from_hf(const std::string& name, std::vector<Tensor> parts) const {
  AM_CHECK(parts.size() == 1, "parameter '", name, "' is one checkpoint tensor, got ", parts.size());
  return parts[0];
}

}  // namespace automodel::models
