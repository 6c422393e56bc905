#pragma once
// For this component's readers (parse_yaml, translate_value): building a ConfigNode tree in time linear in its size.
// ConfigNode::insert searches the keys and rebases the value on every call, quadratic for a large or deep file.
#include <string>
#include <utility>

#include "components/config/config.h"

namespace automodel::config::detail {

struct Builder {
  // Gives `n` its dotted path, and its descendants theirs (nothing to do for a subtree built at its path).
  static void place(ConfigNode& n, const std::string& path) { n.rebase(path); }

  // Appends a key the caller has checked is not in `map` yet; the value is placed at the key's path.
  static void append(ConfigNode& map, std::string key, ConfigNode value) {
    value.rebase(map.child_path(key));
    map.keys_.push_back(std::move(key));
    map.children_.push_back(std::move(value));
  }
};

}  // namespace automodel::config::detail
