// The `_target_` name registry with NeMo Automodel's dotted names as aliases of ours.
#include "components/config/targets.h"

#include <algorithm>
#include <map>
#include <mutex>

#include "core/error.h"

namespace automodel::config {

namespace {

struct Registry {
  std::mutex mu;
  std::map<std::string, std::string> canonical_of;  // every name (canonical or alias) -> canonical

  void add(const std::string& canonical, const std::vector<std::string>& aliases) {
    if (canonical.empty()) throw Error("register_target: empty name", "", "give the target a name");
    std::lock_guard<std::mutex> lock(mu);
    std::vector<std::string> names{canonical};
    names.insert(names.end(), aliases.begin(), aliases.end());
    for (const std::string& n : names) {
      auto it = canonical_of.find(n);
      if (it != canonical_of.end() && it->second != canonical)
        throw Error("register_target: '" + n + "' is already registered for '" + it->second + "'", "",
                    "choose another name or alias");
    }
    for (const std::string& n : names) canonical_of[n] = canonical;
  }
};

Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

}  // namespace

void register_target(const std::string& canonical, const std::vector<std::string>& aliases) {
  registry().add(canonical, aliases);
}

bool is_registered_target(const std::string& name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.canonical_of.count(name) != 0;
}

std::vector<std::string> registered_target_names() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> out;
  for (const auto& [name, canonical] : r.canonical_of) out.push_back(name);
  return out;
}

std::string resolve_target(const std::string& name) {
  Registry& r = registry();
  std::vector<std::pair<size_t, std::string>> scored;
  {
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.canonical_of.find(name);
    if (it != r.canonical_of.end()) return it->second;
    for (const auto& [n, canonical] : r.canonical_of) scored.emplace_back(edit_distance(name, n), n);
  }
  std::sort(scored.begin(), scored.end());
  std::string closest;
  for (size_t i = 0; i < scored.size() && i < 3; ++i) closest += (i ? ", " : "") + scored[i].second;
  throw Error("unknown _target_ '" + name + "'; closest registered names: " + closest, "",
              "use one of the registered names (automodel's or NeMo Automodel's)");
}

std::string resolve_target(const ConfigNode& map_node) {
  const ConfigNode& t = map_node.at("_target_");
  const std::string& name = t.as_string();
  try {
    return resolve_target(name);
  } catch (const Error& e) {
    std::string key = t.path().empty() ? "_target_" : t.path();
    throw Error(t.where() + ": '" + key + "': " + e.what_part(), t.where(), e.hint());
  }
}

}  // namespace automodel::config
