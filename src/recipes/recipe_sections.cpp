#include "recipes/recipe_sections.h"

#include <algorithm>

#include "components/config/targets.h"
#include "core/error.h"
#include "recipes/build.h"

namespace automodel::recipes {

namespace {

using Keys = std::vector<std::string>;

RecipeSection section(std::string name, TargetRule rule, Keys keys, std::vector<SectionTarget> targets = {}) {
  RecipeSection s;
  s.name = std::move(name);
  s.target = rule;
  s.keys = std::move(keys);
  s.targets = std::move(targets);
  return s;
}

RecipeSection required(RecipeSection s) {
  s.required = true;
  return s;
}

RecipeSection opaque(std::string name) {
  RecipeSection s;
  s.name = std::move(name);
  s.opaque = true;
  return s;
}

// Sections that come in a training and a validation flavour with the same keys (only the training one required).
void add_twice(std::vector<RecipeSection>& table, const std::string& train, const std::string& validation,
               RecipeSection s, const std::string& suffix = "") {
  s.name = train + suffix;
  table.push_back(s);
  s.name = validation + suffix;
  s.required = false;
  table.push_back(std::move(s));
}

Keys with(Keys keys, const Keys& more) {
  keys.insert(keys.end(), more.begin(), more.end());
  return keys;
}

std::vector<RecipeSection> make_table() {
  using enum TargetRule;
  std::vector<RecipeSection> t;
  t.push_back(opaque("recipe"));  // run_recipe reads it: a name or {_target_: name}
  t.push_back(opaque("seed"));    // NeMo's older spelling of rng.seed
  t.push_back(required(section(
      "step_scheduler", None,
      {"global_batch_size", "local_batch_size", "ckpt_every_steps", "val_every_steps", "num_epochs", "max_steps",
       "save_checkpoint_every_epoch", "validate_on_checkpoint", "log_remote_every_steps", "loss_average_window_steps",
       "gc_every_steps", "preemption_signal", "skip_nonfinite_steps", "max_consecutive_skipped_steps"})));
  t.push_back(section("rng", Any, {"seed", "ranked"}));
  RecipeSection model = required(section(
      "model", Required,
      {"pretrained_model_name_or_path", "torch_dtype", "dtype", "attn_implementation", "use_liger_kernel",
       "trust_remote_code", "force_hf", "use_cache", "revision", "output_router_logits", "router_aux_loss_coef"},
      {{"automodel.AutoModelForCausalLM.from_pretrained", {}},
       {"automodel.AutoModelForImageTextToText.from_pretrained", {}}}));
  model.required_keys = {"pretrained_model_name_or_path"};
  t.push_back(std::move(model));
  // Image-text recipes: the processor's directory (default: the model's), and which parts train.
  t.push_back(section("processor", Any, {"pretrained_model_name_or_path", "trust_remote_code", "use_fast"}));
  t.push_back(section("freeze_config", None,
                      {"freeze_embeddings", "freeze_vision_tower", "freeze_language_model", "freeze_audio_tower"}));
  t.push_back(section("tokenizer", Any, {"pretrained_model_name_or_path", "trust_remote_code"}));
  t.push_back(section("peft", Optional,
                      {"target_modules", "exclude_modules", "match_all_linear", "target_parameters", "dim", "alpha",
                       "dropout", "dropout_position", "lora_A_init", "lora_dtype", "use_rslora", "use_triton"},
                      {{"automodel.peft.LoRA", {}}}));
  t.push_back(section("loss_fn", Required, {"fp32_upcast", "ignore_index", "reduction", "chunk_len"},
                      {{"automodel.loss.MaskedCrossEntropy", {}},
                       {"automodel.loss.ChunkedCrossEntropy", {}},
                       {"automodel.loss.FusedLinearCrossEntropy", {}}}));
  // Each dataset function takes its own keyword arguments (NeMo's names for the data path differ between them).
  const Keys text_keys = {"path_or_dataset_id",
                          "path_or_dataset",
                          "dataset_name",
                          "split",
                          "name",
                          "seq_length",
                          "padding",
                          "truncation",
                          "limit_dataset_samples",
                          "start_of_turn_token",
                          "answer_only_loss_mask"};
  const Keys vlm_keys = {"path_or_dataset", "split", "limit_dataset_samples"};
  add_twice(
      t, "dataset", "validation_dataset",
      required(section("", Required, {},
                       {{"automodel.datasets.llm.make_squad_dataset",
                         {"dataset_name", "path_or_dataset", "split", "seq_length", "limit_dataset_samples", "padding",
                          "truncation", "use_chat_template", "start_of_turn_token", "fp8"}},
                        {"automodel.datasets.llm.HellaSwag",
                         {"path_or_dataset", "dataset_name", "split", "num_samples_limit", "pad_to_max_length",
                          "trust_remote_code"}},
                        {"automodel.datasets.llm.ColumnMappedTextInstructionDataset",
                         with(text_keys, {"column_mapping", "use_hf_chat_template", "trust_remote_code"})},
                        {"automodel.datasets.llm.ChatDataset", with(text_keys, {"mask_history", "chat_template"})},
                        {"automodel.datasets.vlm.make_conversation_dataset", vlm_keys},
                        {"automodel.datasets.vlm.make_rdr_dataset", vlm_keys},
                        {"automodel.datasets.vlm.make_cord_v2_dataset", vlm_keys},
                        {"automodel.datasets.vlm.make_medpix_dataset", vlm_keys}})));
  t.push_back(
      section("packed_sequence", None, {"packed_sequence_size", "split_across_pack", "max_packs", "packing_strategy"}));
  // Worker and memory-pinning options of torch's loader mean nothing to an in-process loader; they are accepted so
  // NeMo Automodel recipes run unchanged.
  add_twice(t, "dataloader", "validation_dataloader",
            section("", Optional,
                    {"collate_fn", "shuffle", "drop_last", "batch_size", "num_workers", "pin_memory",
                     "persistent_workers", "prefetch_factor", "seed"},
                    {{"automodel.datasets.DataLoader", {}}}));
  add_twice(t, "dataloader", "validation_dataloader",
            section("", Required, {},
                    {{"automodel.datasets.default_collater", {"pad_seq_len_divisible"}},
                     {"automodel.datasets.vlm.default_collate_fn", {"max_length"}}}),
            ".collate_fn");
  // foreach / fused pick torch's implementation, not the math: ours is always one pass over flat buffers.
  const Keys torch_keys = {"momentum", "dampening", "nesterov",   "foreach",
                           "fused",    "maximize",  "capturable", "differentiable"};
  RecipeSection optimizer = required(section("optimizer", Required, {"lr", "betas", "eps", "weight_decay", "amsgrad"},
                                             {{"automodel.optim.AdamW", torch_keys},
                                              {"automodel.optim.Adam", torch_keys},
                                              {"automodel.optim.SGD", torch_keys},
                                              {"automodel.optim.AdamW8bit", {"block_size", "bf16_stochastic_round"}}}));
  // bitsandbytes quantizes its state with its own kernels: there is no fp32 reference to match on a CPU.
  optimizer.refused_targets = {{"bitsandbytes.optim.AdamW8bit",
                                "use torchao.optim.AdamW8bit (block-wise 8-bit AdamW state, as torchao "
                                "computes it)"}};
  t.push_back(std::move(optimizer));
  t.push_back(
      section("lr_scheduler", None,
              {"init_lr", "max_lr", "min_lr", "lr_warmup_steps", "lr_decay_steps", "lr_decay_style",
               "start_weight_decay", "end_weight_decay", "wd_incr_steps", "weight_decay_incr_style", "wsd_decay_steps",
               "lr_wsd_decay_style", "use_checkpoint_opt_param_scheduler", "override_opt_param_scheduler"}));
  t.push_back(section("clip_grad_norm", None, {"max_norm"}));
  t.push_back(section("checkpoint", None,
                      {"enabled", "checkpoint_dir", "model_save_format", "save_consolidated", "restore_from",
                       "max_recent_checkpoints", "model_cache_dir", "model_repo_id", "is_async", "is_peft"}));
  // NeMo names the strategy by `strategy:` or by its manager class in `_target_` (build_distributed.cpp).
  RecipeSection distributed = section(
      "distributed", Optional,
      {"strategy", "dp_size", "dp_replicate_size", "tp_size", "cp_size", "pp_size", "ep_size", "sequence_parallel",
       "activation_checkpointing", "defer_fsdp_grad_sync", "bucket_cap_mb", "overlap_grad_reduce"},
      {{"automodel.distributed.FSDP2Manager", {}}, {"automodel.distributed.DDPManager", {}}});
  distributed.refused_targets = {
      {"nemo_automodel.components.distributed.megatron_fsdp.MegatronFSDPManager", "use strategy: fsdp2 or ddp"}};
  t.push_back(std::move(distributed));
  t.push_back(section("dist_env", None, {"backend", "timeout_minutes"}));
  for (const char* name : {"compile", "wandb", "mlflow", "tensorboard", "comet", "autocast", "benchmark"})
    t.push_back(opaque(name));
  return t;
}

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

std::vector<std::string> target_names(const RecipeSection& s) {
  std::vector<std::string> names;
  for (const SectionTarget& t : s.targets) names.push_back(t.canonical);
  return names;
}

// The section's canonical target ("" when it has none or the rule does not resolve it), or an Error at its line.
std::string checked_target(const ConfigNode& node, const RecipeSection& s) {
  const ConfigNode* given = node.find("_target_");
  if (s.target == TargetRule::None || s.target == TargetRule::Any) return "";
  if (given == nullptr || given->is_null()) {
    if (s.target == TargetRule::Optional) return "";
    throw Error(node.path() + " has no _target_", node.where(),
                "add `_target_:` with one of: " + join(target_names(s)));
  }
  for (const auto& [name, instead] : s.refused_targets)
    if (given->kind() == ConfigNode::Kind::String && given->as_string() == name)
      throw Error(given->path() + " " + name + " is not supported", given->where(), instead);
  const std::string canonical = config::resolve_target(node);
  for (const SectionTarget& t : s.targets)
    if (t.canonical == canonical) return canonical;
  throw Error(node.path() + "._target_ '" + given->as_string() + "' cannot build a " + node.path(), given->where(),
              "use one of: " + join(target_names(s)) + " (or NeMo Automodel's names for them)");
}

}  // namespace

const std::vector<RecipeSection>& recipe_sections() {
  static const std::vector<RecipeSection> table = make_table();
  return table;
}

const RecipeSection& recipe_section(const std::string& name) {
  for (const RecipeSection& s : recipe_sections())
    if (s.name == name) return s;
  throw Error("the recipe has no section '" + name + "' in its table", "recipes/recipe_sections.cpp",
              "add the section to make_table()");
}

std::vector<std::string> section_keys(const std::string& name, const std::string& target) {
  const RecipeSection& s = recipe_section(name);
  std::vector<std::string> keys;
  if (s.target != TargetRule::None) keys.push_back("_target_");
  keys.insert(keys.end(), s.keys.begin(), s.keys.end());
  for (const SectionTarget& t : s.targets)
    if (t.canonical == target)
      for (const std::string& k : t.keys)
        if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
  return keys;
}

void check_section_keys(const ConfigNode& node, const std::string& name, const std::string& target) {
  config::check_keys(node, section_keys(name, target));
}

void validate_recipe(const ConfigNode& recipe) {
  register_recipe_targets();
  std::vector<std::string> top_level;
  for (const RecipeSection& s : recipe_sections())
    if (s.name.find('.') == std::string::npos) top_level.push_back(s.name);
  config::check_keys(recipe, top_level);
  for (const RecipeSection& s : recipe_sections()) {
    if (s.required) recipe.at(s.name);  // the Error names the missing section
    const ConfigNode* node = recipe.find(s.name);
    if (s.opaque || node == nullptr || node->is_null()) continue;
    node->keys();  // the Error for a section that is not a map
    const std::string target = checked_target(*node, s);
    check_section_keys(*node, s.name, target);
    for (const std::string& key : s.required_keys)
      if (!node->contains(key) || node->at(key).is_null())
        throw Error(s.name + "." + key + " is missing", node->where(),
                    "add `" + key + ":` to the " + s.name + " section");
  }
}

}  // namespace automodel::recipes
