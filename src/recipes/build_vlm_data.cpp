#include "recipes/build_vlm_data.h"

#include "components/config/targets.h"
#include "core/error.h"
#include "io/hf_dir.h"

namespace automodel::recipes {

namespace {

constexpr const char* kConversations = "automodel.datasets.vlm.make_conversation_dataset";
constexpr const char* kRdr = "automodel.datasets.vlm.make_rdr_dataset";
constexpr const char* kCordV2 = "automodel.datasets.vlm.make_cord_v2_dataset";
constexpr const char* kMedPix = "automodel.datasets.vlm.make_medpix_dataset";
constexpr const char* kCollate = "automodel.datasets.vlm.default_collate_fn";
constexpr const char* kNemo = "nemo_automodel.components.datasets.vlm.";

}  // namespace

void register_vlm_dataset_targets() {
  using config::register_target;
  register_target(kConversations);
  register_target(kRdr, {std::string(kNemo) + "datasets.make_rdr_dataset"});
  register_target(kCordV2, {std::string(kNemo) + "datasets.make_cord_v2_dataset"});
  register_target(kMedPix, {std::string(kNemo) + "datasets.make_medpix_dataset",
                            std::string(kNemo) + "datasets.make_medpix_vqa_dataset"});
  register_target(kCollate, {std::string(kNemo) + "collate_fns.default_collate_fn"});
}

bool is_vlm_dataset(const ConfigNode& section) {
  register_vlm_dataset_targets();
  if (section.kind() != ConfigNode::Kind::Map || !section.contains("_target_")) return false;
  const auto name = section.get_optional<std::string>("_target_");
  if (!name || !config::is_registered_target(*name)) return false;
  const std::string target = config::resolve_target(*name);
  return target == kConversations || target == kRdr || target == kCordV2 || target == kMedPix;
}

data::ConversationDataset build_vlm_dataset(const ConfigNode& s) {
  register_vlm_dataset_targets();
  const std::string target = config::resolve_target(s);
  config::check_keys(s, {"_target_", "path_or_dataset", "split", "limit_dataset_samples"});
  data::VlmDatasetOptions o;
  if (!s.contains("path_or_dataset"))
    throw Error(s.path() + ".path_or_dataset is missing", s.where(),
                "set it to a local .json/.jsonl file (or a directory of them) whose image paths are relative to it");
  o.path = s.get<std::string>("path_or_dataset");
  o.split = s.get<std::string>("split", o.split);
  o.limit_dataset_samples = s.get_optional<int64_t>("limit_dataset_samples");
  if (target == kConversations) return data::make_vlm_conversation_dataset(o);
  if (target == kRdr) return data::make_rdr_dataset(o);
  if (target == kCordV2) return data::make_cord_v2_dataset(o);
  if (target == kMedPix) return data::make_medpix_dataset(o);
  throw Error(s.path() + "._target_ '" + s.get<std::string>("_target_") + "' is not a vision-language dataset",
              s.at("_target_").where(),
              std::string("use one of: ") + kConversations + ", " + kRdr + ", " + kCordV2 + ", " + kMedPix +
                  " (or NeMo Automodel's names for them)");
}

VlmCollateOptions build_vlm_collate_options(const ConfigNode* collate_fn) {
  VlmCollateOptions o;
  if (collate_fn == nullptr || collate_fn->is_null()) return o;
  register_vlm_dataset_targets();
  if (collate_fn->contains("_target_") && config::resolve_target(*collate_fn) != kCollate)
    throw Error(collate_fn->path() + "._target_ is not a vision-language collate", collate_fn->at("_target_").where(),
                std::string("use ") + kCollate + " (NeMo's collate_fns.default_collate_fn)");
  config::check_keys(*collate_fn, {"_target_", "max_length"});
  o.max_length = collate_fn->get_optional<int64_t>("max_length");
  return o;
}

RecipeVlmDataset build_recipe_vlm_dataset(const ConfigNode& recipe, const std::string& section) {
  const ConfigNode* s = recipe.find(section);
  if (s == nullptr || s->is_null())
    throw Error("the recipe has no " + section + " section", recipe.where(), "add one, or pick the other section");
  const ConfigNode* processor = recipe.find("processor");
  const ConfigNode* source =
      processor != nullptr && processor->contains("pretrained_model_name_or_path") ? processor : recipe.find("model");
  if (source == nullptr || !source->contains("pretrained_model_name_or_path"))
    throw Error("model.pretrained_model_name_or_path is missing", recipe.where(),
                "give a model directory written by transformers (with its processor) or a hub id in the local HF "
                "cache");
  const std::string dir = io::resolve_model_dir(source->get<std::string>("pretrained_model_name_or_path"),
                                                source->get<std::string>("revision", "main"));
  RecipeVlmDataset out;
  out.processor = load_vlm_processor(dir);
  out.data = build_vlm_dataset(*s);
  const std::string loader = section == "validation_dataset" && recipe.contains("validation_dataloader.collate_fn")
                                 ? "validation_dataloader.collate_fn"
                                 : "dataloader.collate_fn";
  out.collate = build_vlm_collate_options(recipe.find(loader));
  return out;
}

}  // namespace automodel::recipes
