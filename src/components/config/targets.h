#pragma once
// The `_target_` registry: our canonical names, each with aliases (NeMo Automodel's dotted names). Only names live
// here; the recipes register the names they build (recipes/build.cpp) and attach the factories to them.
#include <string>
#include <vector>

#include "components/config/config.h"

namespace automodel::config {

// Registers `canonical` (and its aliases). Re-registering the same pair is a no-op; a name already taken by another
// canonical name is an Error.
void register_target(const std::string& canonical, const std::vector<std::string>& aliases = {});

// The canonical name for a canonical name or an alias; an Error listing the 3 closest registered names otherwise.
std::string resolve_target(const std::string& name);
// The same for a map's `_target_` key, the error prefixed with its line and key.
std::string resolve_target(const ConfigNode& map_node);

bool is_registered_target(const std::string& name);
// Every registered name (canonical names and aliases), sorted.
std::vector<std::string> registered_target_names();

}  // namespace automodel::config
