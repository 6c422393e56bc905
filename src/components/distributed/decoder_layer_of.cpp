#include "components/distributed/decoder_layer_of.h"

#include <string>

namespace automodel::distributed {

int64_t decoder_layer_of(const nn::FlatParameters& buffer) {
  int64_t layer = -1;
  for (const auto& slot : buffer.slots) {
    const std::string prefix = "model.layers.";
    const size_t at = slot.name.find(prefix);
    if (at == std::string::npos || (at > 0 && slot.name[at - 1] != '.')) return -1;
    const size_t begin = at + prefix.size(), dot = slot.name.find('.', begin);
    if (dot == begin || slot.name.find_first_not_of("0123456789", begin) != dot) return -1;
    const int64_t l = std::stoll(slot.name.substr(begin, dot - begin));
    if (layer != -1 && l != layer) return -1;
    layer = l;
  }
  return layer;
}

}  // namespace automodel::distributed
