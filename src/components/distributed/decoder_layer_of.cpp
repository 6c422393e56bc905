#include "components/distributed/decoder_layer_of.h"

#include <string>

namespace automodel::distributed {

int64_t decoder_layer_of(const nn::FlatParameters& buffer) {
  int64_t layer = -1;
  for (const auto& slot : buffer.slots) {
    const std::string prefix = "model.layers.";
    if (slot.name.rfind(prefix, 0) != 0) return -1;
    const size_t dot = slot.name.find('.', prefix.size());
    const int64_t l = std::stoll(slot.name.substr(prefix.size(), dot - prefix.size()));
    if (layer != -1 && l != layer) return -1;
    layer = l;
  }
  return layer;
}

}  // namespace automodel::distributed
