#include "components/data/sample.h"

#include <algorithm>

namespace automodel::data {

int64_t Sample::num_label_tokens() const {
  return std::count_if(labels.begin(), labels.end(), [](int64_t l) { return l != kIgnoreIndex; });
}

}  // namespace automodel::data
