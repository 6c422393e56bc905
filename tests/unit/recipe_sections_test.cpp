// recipes/recipe_sections: the table of a recipe's sections and the early pass over a whole recipe. The recipes here
// name a model and data that do not exist: validate_recipe never looks at them.
#include "recipes/recipe_sections.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "components/config/targets.h"
#include "error_of.h"
#include "recipes/build.h"

namespace {

namespace fs = std::filesystem;
using automodel::config::ConfigNode;
using automodel::config::parse_yaml;
using automodel::recipes::recipe_section;
using automodel::recipes::recipe_sections;
using automodel::recipes::RecipeSection;
using automodel::recipes::section_keys;
using automodel::recipes::TargetRule;
using automodel::recipes::validate_recipe;
using automodel::testing::error_of;

const fs::path kExamples = fs::path(__FILE__).parent_path() / ".." / ".." / "examples" / "llm_finetune";

const std::vector<std::pair<std::string, std::string>> kRequiredBlocks = {
    {"step_scheduler", "step_scheduler:\n  max_steps: 2\n"},
    {"model",
     "model:\n  _target_: nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained\n"
     "  pretrained_model_name_or_path: /nonexistent/model\n"},
    {"dataset",
     "dataset:\n  _target_: nemo_automodel.components.datasets.llm.squad.make_squad_dataset\n"
     "  dataset_name: /nonexistent/data\n"},
    {"optimizer", "optimizer:\n  _target_: torch.optim.AdamW\n  lr: 1.0e-3\n"},
};

// The required sections in block style, but the one named `left_out`.
std::string recipe_without(const std::string& left_out) {
  std::string text;
  for (const auto& [name, block] : kRequiredBlocks)
    if (name != left_out) text += block;
  return text;
}

int lines_of(const std::string& text) { return static_cast<int>(std::count(text.begin(), text.end(), '\n')); }

std::string top_level(const std::string& name) { return name.substr(0, name.find('.')); }

// The section's block holding `entries` (one "key: value" line each) after its _target_ line when it names
// targets; nested sections (a.b) go under their parent.
std::string section_block(const RecipeSection& s, std::vector<std::string> entries) {
  if (!s.targets.empty()) entries.insert(entries.begin(), "_target_: " + s.targets.front().canonical);
  const size_t dot = s.name.find('.');
  std::string block = top_level(s.name) + ":\n";
  std::string indent = "  ";
  if (dot != std::string::npos) {
    block += "  " + s.name.substr(dot + 1) + ":\n";
    indent = "    ";
  }
  for (const std::string& e : entries) block += indent + e + "\n";
  return block;
}

// Every section validate_recipe looks into.
std::vector<RecipeSection> checked_sections() {
  std::vector<RecipeSection> out;
  for (const RecipeSection& s : recipe_sections())
    if (!s.opaque) out.push_back(s);
  return out;
}

TEST(RecipeSections, EveryTargetInTheTableIsARegisteredCanonicalName) {
  automodel::recipes::register_recipe_targets();
  for (const RecipeSection& s : recipe_sections())
    for (const auto& t : s.targets) EXPECT_EQ(automodel::config::resolve_target(t.canonical), t.canonical) << s.name;
}

TEST(RecipeSections, TheTableCoversEverySectionTheRecipeReads) {
  for (const char* name : {"step_scheduler",
                           "rng",
                           "model",
                           "tokenizer",
                           "checkpoint",
                           "loss_fn",
                           "dataset",
                           "validation_dataset",
                           "dataloader",
                           "dataloader.collate_fn",
                           "validation_dataloader",
                           "validation_dataloader.collate_fn",
                           "optimizer",
                           "lr_scheduler",
                           "clip_grad_norm",
                           "peft",
                           "distributed",
                           "packed_sequence",
                           "dist_env",
                           "compile"})
    EXPECT_EQ(recipe_section(name).name, name);
  EXPECT_NE(error_of([] { recipe_section("optimiser"); }).find("no section 'optimiser'"), std::string::npos);
}

TEST(RecipeSections, KeysFollowTheTargetAndTheTargetRule) {
  auto has = [](const std::vector<std::string>& keys, const std::string& key) {
    return std::find(keys.begin(), keys.end(), key) != keys.end();
  };
  EXPECT_TRUE(has(section_keys("optimizer", "automodel.optim.AdamW8bit"), "block_size"));
  EXPECT_FALSE(has(section_keys("optimizer", "automodel.optim.AdamW"), "block_size"));
  EXPECT_TRUE(has(section_keys("optimizer", "automodel.optim.SGD"), "momentum"));
  EXPECT_TRUE(
      has(section_keys("dataset", "automodel.datasets.llm.ColumnMappedTextInstructionDataset"), "column_mapping"));
  EXPECT_FALSE(has(section_keys("dataset", "automodel.datasets.llm.make_squad_dataset"), "column_mapping"));
  EXPECT_TRUE(has(section_keys("loss_fn"), "_target_"));
  EXPECT_TRUE(has(section_keys("rng"), "_target_"));
  EXPECT_FALSE(has(section_keys("lr_scheduler"), "_target_"));
  EXPECT_FALSE(has(section_keys("step_scheduler"), "_target_"));
}

TEST(RecipeSections, TheExampleRecipesPass) {
  int seen = 0;
  for (const auto& entry : fs::directory_iterator(kExamples)) {
    if (entry.path().extension() != ".yaml") continue;
    EXPECT_EQ(error_of([&] { validate_recipe(automodel::config::load_yaml(entry.path().string())); }), "")
        << entry.path();
    seen += 1;
  }
  EXPECT_GE(seen, 3);
}

// In every section the early pass checks, a key one letter short of an accepted one is an Error at its line that
// names the key meant.
TEST(RecipeSections, AMisspelledKeyInEverySectionNamesItsLineAndTheKeyMeant) {
  for (const RecipeSection& s : checked_sections()) {
    const std::string target = s.targets.empty() ? "" : s.targets.front().canonical;
    std::vector<std::string> keys = section_keys(s.name, target);
    keys.erase(std::remove(keys.begin(), keys.end(), "_target_"), keys.end());
    ASSERT_FALSE(keys.empty()) << s.name;
    // The longest key: no other key is one edit away from it with a letter dropped.
    const std::string meant = *std::max_element(
        keys.begin(), keys.end(), [](const std::string& a, const std::string& b) { return a.size() < b.size(); });
    const std::string typo = meant.substr(0, meant.size() - 1);
    const std::string head = recipe_without(top_level(s.name));
    const std::string text = head + section_block(s, {typo + ": 1"});
    const std::string err = error_of([&] { validate_recipe(parse_yaml(text, "recipe.yaml")); });
    const std::string expected = "recipe.yaml:" + std::to_string(lines_of(text)) + ": unknown key '" + s.name + "." +
                                 typo + "'; did you mean '" + meant + "'?";
    EXPECT_NE(err.find(expected), std::string::npos) << s.name << ": " << err;
  }
}

// Every section that resolves its _target_ refuses an unknown name and a name that builds another section, at the
// _target_'s line.
TEST(RecipeSections, AWrongTargetInEverySectionIsAnErrorAtItsLine) {
  for (const RecipeSection& s : checked_sections()) {
    if (s.target != TargetRule::Optional && s.target != TargetRule::Required) continue;
    const std::string head = recipe_without(top_level(s.name));
    RecipeSection untargeted = s;
    untargeted.targets.clear();
    const std::string target_line = std::to_string(lines_of(head) + (s.name.find('.') == std::string::npos ? 2 : 3));
    std::string text = head + section_block(untargeted, {"_target_: nemo_automodel.NoSuchThing"});
    std::string err = error_of([&] { validate_recipe(parse_yaml(text, "recipe.yaml")); });
    EXPECT_NE(err.find("recipe.yaml:" + target_line + ": '" + s.name +
                       "._target_': unknown _target_ "
                       "'nemo_automodel.NoSuchThing'"),
              std::string::npos)
        << s.name << ": " << err;
    const std::string other =
        s.name == "loss_fn" ? "torch.optim.AdamW" : "nemo_automodel.components.loss.masked_ce.MaskedCrossEntropy";
    text = head + section_block(untargeted, {"_target_: " + other});
    err = error_of([&] { validate_recipe(parse_yaml(text, "recipe.yaml")); });
    EXPECT_NE(err.find(s.name + "._target_ '" + other + "' cannot build a " + s.name), std::string::npos)
        << s.name << ": " << err;
    EXPECT_NE(err.find("recipe.yaml:" + target_line), std::string::npos) << s.name << ": " << err;
  }
}

TEST(RecipeSections, RequiredSectionsTargetsAndKeys) {
  std::string err = error_of([] { validate_recipe(parse_yaml(recipe_without("optimizer"), "recipe.yaml")); });
  EXPECT_NE(err.find("missing required key 'optimizer'"), std::string::npos) << err;
  err = error_of([] { validate_recipe(parse_yaml(recipe_without("") + "loss_fn:\n  ignore_index: -1\n", "r.yaml")); });
  EXPECT_NE(err.find("loss_fn has no _target_"), std::string::npos) << err;
  err = error_of([] {
    validate_recipe(parse_yaml(recipe_without("model") + "model:\n  _target_: transformers.AutoModelForCausalLM."
                                                         "from_pretrained\n",
                               "r.yaml"));
  });
  EXPECT_NE(err.find("model.pretrained_model_name_or_path is missing"), std::string::npos) << err;
  err = error_of([] { validate_recipe(parse_yaml(recipe_without("") + "clip_grad_norm: 1.0\n", "r.yaml")); });
  EXPECT_NE(err.find("'clip_grad_norm': expected a map"), std::string::npos) << err;
  err = error_of([] { validate_recipe(parse_yaml(recipe_without("") + "optimzer_extra: {}\n", "r.yaml")); });
  EXPECT_NE(err.find("unknown key 'optimzer_extra'"), std::string::npos) << err;
  err = error_of([] {
    validate_recipe(
        parse_yaml(recipe_without("optimizer") + "optimizer:\n  _target_: bitsandbytes.optim.AdamW8bit\n", "r.yaml"));
  });
  EXPECT_NE(err.find("bitsandbytes.optim.AdamW8bit is not supported"), std::string::npos) << err;
  EXPECT_NE(err.find("torchao.optim.AdamW8bit"), std::string::npos) << err;
}

// NeMo's sections for process groups, torch.compile and remote loggers are accepted whatever they hold; a null
// optional section is as good as none.
TEST(RecipeSections, SectionsNeMoWritesAreAcceptedAndNullSectionsAreAbsent) {
  const std::string text = recipe_without("") +
                           "dist_env: {backend: nccl, timeout_minutes: 1}\n"
                           "compile: {enabled: false, mode: default, fullgraph: false, dynamic: true, backend: null}\n"
                           "wandb: {project: p, anything: [1, 2]}\n"
                           "lr_scheduler: null\npeft: null\nrecipe: TrainFinetuneRecipeForNextTokenPrediction\n"
                           "seed: 7\n";
  EXPECT_EQ(error_of([&] { validate_recipe(parse_yaml(text, "recipe.yaml")); }), "");
}

}  // namespace
