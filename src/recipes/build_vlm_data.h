#pragma once
// The dataset and collate sections of a vision-language recipe: NeMo Automodel's VLM dataset `_target_`s
// (nemo_automodel.components.datasets.vlm.datasets.make_*) and its collate (collate_fns.default_collate_fn).
#include <string>

#include "components/config/config.h"
#include "components/data/vlm_datasets.h"
#include "recipes/vlm_collate.h"

namespace automodel::recipes {

using config::ConfigNode;

void register_vlm_dataset_targets();
// Whether a dataset section's `_target_` names a VLM dataset (false for none or another target).
bool is_vlm_dataset(const ConfigNode& section);
// A VLM dataset section: its conversations, read on demand. Errors name the section's keys.
data::ConversationDataset build_vlm_dataset(const ConfigNode& section);
// A dataloader's collate_fn section (null: the defaults).
VlmCollateOptions build_vlm_collate_options(const ConfigNode* collate_fn);

// A whole recipe's VLM `dataset` or `validation_dataset` with the processor (the `processor` section's
// pretrained_model_name_or_path, else the model's) and its dataloader's collate options (validation_dataloader's,
// else dataloader's), without loading the model (what `automodel dataset` shows).
struct RecipeVlmDataset {
  VlmProcessor processor;
  data::ConversationDataset data;
  VlmCollateOptions collate;
};
RecipeVlmDataset build_recipe_vlm_dataset(const ConfigNode& recipe, const std::string& section);

}  // namespace automodel::recipes
