// The dataset sections of a recipe: NeMo Automodel's dataset `_target_`s and keyword arguments onto
// components/data's builders.
#include "components/config/targets.h"
#include "components/data/llm_datasets.h"
#include "core/error.h"
#include "io/hf_dir.h"
#include "recipes/build.h"
#include "recipes/build_vlm_data.h"
#include "recipes/recipe_sections.h"

namespace automodel::recipes {

namespace {

constexpr const char* kSquad = "automodel.datasets.llm.make_squad_dataset";
constexpr const char* kHellaSwag = "automodel.datasets.llm.HellaSwag";
constexpr const char* kColumnMapped = "automodel.datasets.llm.ColumnMappedTextInstructionDataset";
constexpr const char* kChat = "automodel.datasets.llm.ChatDataset";

// The local path of the data: the first of `keys` present (NeMo's functions name it differently).
std::string data_path(const ConfigNode& s, std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (auto v = s.get_optional<std::string>(k)) return *v;
  throw Error(s.path() + " names no data", s.where(),
              std::string("set ") + *keys.begin() + " to a local .json/.jsonl file or a directory of them");
}

// padding: NeMo passes tokenizer padding values through; true / false are "max_length" / "do_not_pad".
std::string padding_of(const ConfigNode& s, const char* key, const char* fallback) {
  const ConfigNode* n = s.find(key);
  if (n == nullptr || n->is_null()) return fallback;
  if (n->kind() == ConfigNode::Kind::Bool)
    return n->as_bool() ? (std::string(key) == "padding" ? "max_length" : "longest_first") : "do_not_pad";
  return n->as_string();
}

}  // namespace

void register_dataset_targets() {
  using config::register_target;
  register_target(kSquad, {"nemo_automodel.components.datasets.llm.squad.make_squad_dataset"});
  register_target(kHellaSwag, {"nemo_automodel.components.datasets.llm.hellaswag.HellaSwag"});
  register_target(kColumnMapped, {"nemo_automodel.components.datasets.llm.column_mapped_text_instruction_dataset."
                                  "ColumnMappedTextInstructionDataset"});
  register_target(kChat, {"nemo_automodel.components.datasets.llm.chat_dataset.ChatDataset"});
  register_vlm_dataset_targets();
}

data::Dataset build_dataset(const ConfigNode& s, const data::TextTokenizer& tok) {
  const std::string target = config::resolve_target(s);
  if (target == kSquad) {
    check_section_keys(s, "dataset", target);
    data::SquadOptions o;
    o.path = data_path(s, {"dataset_name", "path_or_dataset"});
    o.split = s.get<std::string>("split", o.split);
    o.seq_length = s.get_optional<int64_t>("seq_length");
    o.limit_dataset_samples = s.get_optional<int64_t>("limit_dataset_samples");
    o.padding = padding_of(s, "padding", "do_not_pad");
    o.truncation = padding_of(s, "truncation", "do_not_truncate");
    o.use_chat_template = s.get_optional<bool>("use_chat_template");
    o.start_of_turn_token = s.get_optional<std::string>("start_of_turn_token");
    return data::make_squad_dataset(tok, o);
  }
  if (target == kHellaSwag) {
    check_section_keys(s, "dataset", target);
    data::HellaSwagOptions o;
    o.path = data_path(s, {"path_or_dataset", "dataset_name"});
    o.split = s.get<std::string>("split", o.split);
    o.num_samples_limit = s.get_optional<int64_t>("num_samples_limit");
    o.pad_to_max_length = s.get<bool>("pad_to_max_length", o.pad_to_max_length);
    return data::make_hellaswag_dataset(tok, o);
  }
  if (target == kColumnMapped) {
    check_section_keys(s, "dataset", target);
    data::ColumnMappedOptions o;
    o.path = data_path(s, {"path_or_dataset_id", "path_or_dataset", "dataset_name"});
    o.split = s.get<std::string>("split", o.split);
    if (!s.contains("column_mapping"))
      throw Error(s.path() + ".column_mapping is missing", s.where(),
                  "map context / question / answer to the columns of your records, e.g. {question: q, answer: a}");
    const ConfigNode& m = s.at("column_mapping");
    for (const auto& key : m.keys()) o.column_mapping[key] = m.get<std::string>(key);
    o.answer_only_loss_mask = s.get<bool>("answer_only_loss_mask", true);
    o.seq_length = s.get_optional<int64_t>("seq_length");
    o.limit_dataset_samples = s.get_optional<int64_t>("limit_dataset_samples");
    o.padding = padding_of(s, "padding", "do_not_pad");
    o.truncation = padding_of(s, "truncation", "do_not_truncate");
    o.use_hf_chat_template = s.get<bool>("use_hf_chat_template", false);
    return data::make_column_mapped_dataset(tok, o);
  }
  if (target == kChat) {
    check_section_keys(s, "dataset", target);
    if (s.contains("chat_template") && !s.at("chat_template").is_null())
      throw Error(s.path() + ".chat_template: a template given in the recipe is not supported",
                  s.at("chat_template").where(), "put it in the model directory's chat_template.jinja");
    data::ChatOptions o;
    o.path = data_path(s, {"path_or_dataset_id", "path_or_dataset", "dataset_name"});
    o.split = s.get<std::string>("split", o.split);
    o.seq_length = s.get_optional<int64_t>("seq_length");
    o.limit_dataset_samples = s.get_optional<int64_t>("limit_dataset_samples");
    o.padding = padding_of(s, "padding", "do_not_pad");
    o.truncation = padding_of(s, "truncation", "do_not_truncate");
    o.answer_only_loss_mask = s.get<bool>("answer_only_loss_mask", true);
    o.mask_history = s.get<bool>("mask_history", false);
    o.start_of_turn_token = s.get_optional<std::string>("start_of_turn_token");
    return data::make_chat_dataset(tok, o);
  }
  throw Error(s.path() + "._target_ '" + s.get<std::string>("_target_") + "' is not a dataset",
              s.at("_target_").where(),
              std::string("use one of: ") + kSquad + ", " + kHellaSwag + ", " + kColumnMapped + ", " + kChat +
                  " (or NeMo Automodel's names for them)");
}

RecipeDataset build_recipe_dataset(const ConfigNode& recipe, const std::string& section) {
  register_recipe_targets();
  const ConfigNode* s = recipe.find(section);
  if (s == nullptr || s->is_null())
    throw Error("the recipe has no " + section + " section", recipe.where(), "add one, or pick the other section");
  const ConfigNode& model = recipe.at("model");
  if (!model.contains("pretrained_model_name_or_path"))
    throw Error("model.pretrained_model_name_or_path is missing", model.where(),
                "give a model directory written by transformers or a hub id in the local HF cache");
  const std::string model_dir = io::resolve_model_dir(model.get<std::string>("pretrained_model_name_or_path"),
                                                      model.get<std::string>("revision", "main"));
  RecipeDataset out{build_tokenizer(recipe.find("tokenizer"), model_dir), {}};
  out.data = build_dataset(*s, out.tokenizer.text);
  return out;
}

}  // namespace automodel::recipes
