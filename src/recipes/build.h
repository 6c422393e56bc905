#pragma once
// Recipe builders: one function per YAML section (NeMo Automodel's shape) that checks the section's keys, resolves its
// `_target_` through the registry (our names or NeMo Automodel's) and builds the component it names.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "components/config/config.h"
#include "components/data/collate.h"
#include "components/data/sample.h"
#include "components/loss/cross_entropy.h"
#include "components/optim/optimizer.h"
#include "components/optim/scheduler.h"
#include "components/peft/peft_config.h"
#include "components/tokenizer/tokenizer.h"
#include "models/language_model.h"
#include "nn/flat_params.h"

namespace automodel::recipes {

using config::ConfigNode;

// Registers the canonical `_target_` names the builders below accept (with NeMo Automodel's names as aliases).
void register_recipe_targets();

// model: {_target_, pretrained_model_name_or_path, torch_dtype, attn_implementation, ...}. The model directory is
// resolved (a local path or a hub id in the HF cache) and returned through `model_dir`.
std::unique_ptr<models::LanguageModel> build_model(const ConfigNode& section, std::string& model_dir);

// The tokenizer of the model directory (or `tokenizer.pretrained_model_name_or_path` when given), with its chat
// template wired into the data seam.
struct TokenizerBundle {
  std::shared_ptr<tokenizer::Tokenizer> tokenizer;
  data::TextTokenizer text;  // the seam the datasets use
  std::string dir;
  int64_t pad_id = 0;  // pad token, else eos, else 0 (as NeMo Automodel's collater)
};
TokenizerBundle build_tokenizer(const ConfigNode* section, const std::string& model_dir);

// dataset / validation_dataset sections: the dataset, its samples made on demand (build_data.cpp).
void register_dataset_targets();
data::Dataset build_dataset(const ConfigNode& section, const data::TextTokenizer& tokenizer);
// A whole recipe's `dataset` or `validation_dataset` with the recipe's tokenizer, without loading the model (what
// `automodel dataset` shows). Error when the recipe has no such section.
struct RecipeDataset {
  TokenizerBundle tokenizer;
  data::Dataset data;
};
RecipeDataset build_recipe_dataset(const ConfigNode& recipe, const std::string& section);

// dataloader / validation_dataloader sections.
struct LoaderOptions {
  bool shuffle = false;
  bool drop_last = false;
  int64_t pad_to_multiple_of = 1;  // collate_fn.pad_seq_len_divisible
};
LoaderOptions build_loader_options(const ConfigNode* section, bool default_shuffle);

// peft section (NeMo Automodel's PeftConfig keys); nullopt when absent.
std::optional<peft::PeftConfig> build_peft_config(const ConfigNode* section);

// The trainable parameters cut per layer (one list per decoder layer, and the embeddings and the final norm / LM head
// around them): the unit data parallel reduces and shards. Under a peft only the adapters train.
std::vector<nn::NamedParameters> trainable_parameters_per_layer(const models::LanguageModel& model);

// NeMo's freeze_config (section may be null): which parts of an image-text model train. As NeMo's defaults:
// freeze_embeddings and freeze_vision_tower true, freeze_language_model false (the decoder layers and final norm; a
// tied LM head is the embedding). Error on a causal LM, which NeMo's LLM recipe does not freeze.
void apply_freeze_config(const ConfigNode* section, models::LanguageModel& model);

// The multiple of elements at which fsdp2 may cut the optimizer section's state of a parameter between ranks:
// AdamW8bit's quantization block (a rank then holds whole blocks), 1 for the others.
int64_t optimizer_state_block(const ConfigNode& section);

// optimizer section over the trainable parameters, which lie in `flat_buffers`. flat_state: the optimizer steps the
// buffers (1-D state per slot); false: tensor by tensor (state in the parameters' shapes, as a peft run keeps it).
std::unique_ptr<optim::Optimizer> build_optimizer(const ConfigNode& section, models::LanguageModel& model,
                                                  const std::vector<nn::FlatParameters>& flat_buffers, bool flat_state);

// lr_scheduler section (absent: none, as NeMo Automodel); total_steps from the step scheduler.
std::unique_ptr<optim::OptimizerParamScheduler> build_lr_scheduler(const ConfigNode* section,
                                                                   optim::Optimizer& optimizer, int64_t total_steps);

// loss_fn section: which cross-entropy and its options. Absent: FusedLinearCrossEntropy (no full-vocab
// logits) with the fused kernels, MaskedCrossEntropy (NeMo Automodel's default, over the logits) with
// model.use_liger_kernel: false; a named loss is always the one named.
struct LossFunction {
  enum class Kind { Masked, Chunked, FusedLinear } kind = Kind::FusedLinear;
  int64_t ignore_index = -100;
  bool fp32_upcast = true;  // masked
  int64_t chunk_len = 0;    // chunked (default 32); fused linear (0 = from its memory budget)
};
LossFunction build_loss(const ConfigNode* section, bool fused_kernels = true);

enum class DistributedStrategy { fsdp2, ddp };
const char* strategy_name(DistributedStrategy s);

struct DistributedOptions {
  DistributedStrategy strategy = DistributedStrategy::fsdp2;
  int64_t dp_size = 1;            // the number of ranks (tp, cp and pp are 1)
  int64_t dp_replicate_size = 1;  // fsdp2 (HSDP): replica groups, each sharding across dp_size / it ranks
  bool activation_checkpointing = false;
  int64_t bucket_bytes = 25 << 20;  // DDP's all-reduce buckets (bucket_cap_mb)
  bool overlap_grad_reduce = true;  // start each bucket during backward (Megatron's overlap_grad_reduce)
  double timeout_minutes = 30;      // dist_env.timeout_minutes
};
void register_distributed_targets();
// The distributed: and dist_env: sections (either may be absent) for a job of `world_size` ranks.
DistributedOptions build_distributed_options(const ConfigNode* section, const ConfigNode* dist_env, int world_size);

}  // namespace automodel::recipes
