#pragma once
// The sections of a fine-tuning recipe and what each accepts: one table that both the early check (validate_recipe,
// run before any data or weights are loaded, so a typo fails in milliseconds) and the readers of the sections
// (build.cpp, build_data.cpp, llm_finetune.cpp) take their keys from, so the two cannot drift.
#include <string>
#include <utility>
#include <vector>

#include "components/config/config.h"

namespace automodel::recipes {

using config::ConfigNode;

// How a section treats its `_target_` key.
enum class TargetRule {
  None,      // it has none
  Any,       // accepted, not resolved: NeMo names a class we have no counterpart of (StatefulRNG, FSDP2Config, ...)
  Optional,  // when given, one of the section's targets
  Required,  // one of the section's targets
};

struct SectionTarget {
  std::string canonical;          // a name register_recipe_targets() registers
  std::vector<std::string> keys;  // what this target takes besides the section's common keys
};

struct RecipeSection {
  std::string name;  // its dotted path from the recipe's root: "optimizer", "dataloader.collate_fn"
  bool required = false;
  // Accepted whatever it holds and otherwise ignored: NeMo sections a single CPU process has no use for
  // (process groups, torch.compile, remote loggers), and the scalars `recipe` and `seed`, read elsewhere.
  bool opaque = false;
  TargetRule target = TargetRule::None;
  std::vector<std::string> keys;  // every target takes these; `_target_` is implied by the rule
  std::vector<SectionTarget> targets;
  std::vector<std::string> required_keys;
  // Names that look like a target of this section but cannot be built here, each with what to use instead.
  std::vector<std::pair<std::string, std::string>> refused_targets;
};

const std::vector<RecipeSection>& recipe_sections();
// The table's entry; an Error for a name not in it (a reader asking for a section the table lacks).
const RecipeSection& recipe_section(const std::string& name);

// The keys section `name` accepts with the canonical `target` ("" for none): its common keys, the target's own keys
// and `_target_` unless the rule is None.
std::vector<std::string> section_keys(const std::string& name, const std::string& target = "");
// config::check_keys with section_keys(name, target).
void check_section_keys(const ConfigNode& node, const std::string& name, const std::string& target = "");

// The early pass over a whole recipe: its top-level keys, the required sections, and in every section given its
// `_target_` (resolved against the section's targets) and its keys. Each error is an automodel::Error at the line
// of the offending key, with the closest accepted name. Registers the recipe's targets first.
void validate_recipe(const ConfigNode& recipe);

}  // namespace automodel::recipes
