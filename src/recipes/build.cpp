#include "recipes/build.h"

#include <cmath>
#include <cstdio>

#include "components/config/targets.h"
#include "components/optim/adamw8bit.h"
#include "components/tokenizer/chat_template.h"
#include "core/error.h"
#include "io/hf_dir.h"
#include "models/auto_model.h"
#include "models/vision_language_model.h"
#include "recipes/recipe_sections.h"

namespace automodel::recipes {

namespace {

constexpr const char* kFromPretrained = "automodel.AutoModelForCausalLM.from_pretrained";
constexpr const char* kVlmCollate = "automodel.datasets.vlm.default_collate_fn";
constexpr const char* kImageTextFromPretrained = "automodel.AutoModelForImageTextToText.from_pretrained";
constexpr const char* kAdamW = "automodel.optim.AdamW";
constexpr const char* kAdam = "automodel.optim.Adam";
constexpr const char* kSGD = "automodel.optim.SGD";
constexpr const char* kAdamW8bit = "automodel.optim.AdamW8bit";
constexpr const char* kMaskedCE = "automodel.loss.MaskedCrossEntropy";
constexpr const char* kChunkedCE = "automodel.loss.ChunkedCrossEntropy";
constexpr const char* kFusedLinearCE = "automodel.loss.FusedLinearCrossEntropy";
constexpr const char* kDataLoader = "automodel.datasets.DataLoader";
constexpr const char* kDefaultCollater = "automodel.datasets.default_collater";
constexpr const char* kLora = "automodel.peft.LoRA";

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// The section's canonical target, or an Error naming what the section accepts.
std::string target_of(const ConfigNode& section, const std::vector<std::string>& accepted) {
  if (!section.contains("_target_"))
    throw Error(section.path() + " has no _target_", section.where(), "add `_target_:` with one of: " + join(accepted));
  const std::string canonical = config::resolve_target(section);
  for (const auto& a : accepted)
    if (canonical == a) return canonical;
  throw Error(
      section.path() + "._target_ '" + section.get<std::string>("_target_") + "' cannot build a " + section.path(),
      section.at("_target_").where(), "use one of: " + join(accepted));
}

DType parse_dtype(const ConfigNode& node) {
  std::string s = node.as_string();
  if (s.rfind("torch.", 0) == 0) s = s.substr(6);
  if (s == "float32" || s == "fp32" || s == "float" || s == "auto") return DType::f32;
  if (s == "bfloat16" || s == "bf16") return DType::bf16;
  throw Error(node.path() + ": unsupported dtype '" + node.as_string() + "'", node.where(),
              "use float32 or bfloat16 (torch.float32 / torch.bfloat16 also accepted)");
}

}  // namespace

void register_recipe_targets() {
  using config::register_target;
  register_target(kFromPretrained, {"nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained",
                                    "nemo_automodel._transformers.NeMoAutoModelForCausalLM.from_pretrained",
                                    "transformers.AutoModelForCausalLM.from_pretrained"});
  register_target(kImageTextFromPretrained,
                  {"nemo_automodel.NeMoAutoModelForImageTextToText.from_pretrained",
                   "nemo_automodel._transformers.NeMoAutoModelForImageTextToText.from_pretrained",
                   "transformers.AutoModelForImageTextToText.from_pretrained"});
  register_target(kAdamW, {"torch.optim.AdamW"});
  register_target(kAdam, {"torch.optim.Adam"});
  register_target(kSGD, {"torch.optim.SGD"});
  register_target(kAdamW8bit, {"torchao.optim.AdamW8bit"});
  register_target(kMaskedCE, {"nemo_automodel.components.loss.masked_ce.MaskedCrossEntropy"});
  register_target(kChunkedCE, {"nemo_automodel.components.loss.chunked_ce.ChunkedCrossEntropy"});
  register_target(kFusedLinearCE, {"nemo_automodel.components.loss.linear_ce.FusedLinearCrossEntropy"});
  register_target(kDataLoader, {"torchdata.stateful_dataloader.StatefulDataLoader", "torch.utils.data.DataLoader"});
  register_target(kDefaultCollater, {"nemo_automodel.components.datasets.utils.default_collater"});
  register_target(kLora, {"nemo_automodel.components._peft.lora.PeftConfig"});
  register_dataset_targets();
  register_distributed_targets();
}

std::unique_ptr<models::LanguageModel> build_model(const ConfigNode& section, std::string& model_dir) {
  check_section_keys(section, "model");
  const bool image_text = target_of(section, {kFromPretrained, kImageTextFromPretrained}) == kImageTextFromPretrained;
  if (!section.contains("pretrained_model_name_or_path"))
    throw Error("model.pretrained_model_name_or_path is missing", section.where(),
                "give a model directory written by transformers or a hub id in the local HF cache");
  model_dir = io::resolve_model_dir(section.get<std::string>("pretrained_model_name_or_path"),
                                    section.get<std::string>("revision", "main"));
  // eager materialises the scores as transformers' eager attention does; the fused backends' names all run our
  // tiled flash attention. use_liger_kernel (NeMo Automodel's default: true) picks our fused layers or transformers'
  // composition of primitive ops, so either side of an A/B run is one override.
  models::KernelOptions kernels;
  if (const ConfigNode* a = section.find("attn_implementation"); a && !a->is_null()) {
    const std::string impl = a->as_string();
    if (impl != "eager" && impl != "sdpa" && impl != "flash_attention_2" && impl != "flex_attention")
      throw Error("model.attn_implementation '" + impl + "' is not known", a->where(),
                  "use eager (scores materialised) or sdpa / flash_attention_2 (automodel's flash attention)");
    kernels.flash_attention = impl != "eager";
  }
  kernels.fused = section.get<bool>("use_liger_kernel", true);
  models::LoadOptions options;
  const ConfigNode* dtype = section.find("torch_dtype");
  if (dtype == nullptr || dtype->is_null()) dtype = section.find("dtype");
  if (dtype != nullptr && !dtype->is_null()) options.dtype = parse_dtype(*dtype);
  if (options.dtype == DType::bf16 && !__builtin_cpu_supports("avx512bf16")) {
    // Without AVX512-BF16 every bf16 GEMM is emulated and slower than fp32: train in fp32 instead.
    std::fprintf(stderr, "warning: %s: this CPU has no AVX512-BF16; training in float32 instead of bfloat16\n",
                 dtype->where().c_str());
    options.dtype = DType::f32;
  }
  // transformers' from_pretrained keyword arguments that set config values: the MoE router loss.
  if (const ConfigNode* v = section.find("output_router_logits"); v && !v->is_null())
    options.config_overrides["output_router_logits"] = v->as<bool>();
  if (const ConfigNode* v = section.find("router_aux_loss_coef"); v && !v->is_null())
    options.config_overrides["router_aux_loss_coef"] = v->as<double>();
  if (image_text != models::is_vision_language_model_dir(model_dir))
    throw Error(model_dir + " holds " + (image_text ? "a causal LM" : "an image-text model") + " but model._target_ " +
                    (image_text ? "loads an image-text model" : "loads a causal LM"),
                section.at("_target_").where(),
                image_text ? "use nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained for a text model"
                           : "use nemo_automodel.NeMoAutoModelForImageTextToText.from_pretrained (and a VLM dataset)");
  std::unique_ptr<models::LanguageModel> model;
  if (image_text)
    model = models::load_vision_language_model(model_dir, options);
  else
    model = models::AutoModelForCausalLM::from_pretrained(model_dir, options);
  model->set_kernels(kernels);
  return model;
}

TokenizerBundle build_tokenizer(const ConfigNode* section, const std::string& model_dir) {
  TokenizerBundle b;
  b.dir = model_dir;
  if (section != nullptr && !section->is_null()) {
    check_section_keys(*section, "tokenizer");
    if (section->contains("pretrained_model_name_or_path"))
      b.dir = io::resolve_model_dir(section->get<std::string>("pretrained_model_name_or_path"));
  }
  b.tokenizer = std::make_shared<tokenizer::Tokenizer>(tokenizer::Tokenizer::from_pretrained(b.dir));
  auto tok = b.tokenizer;
  auto id_of = [&](const std::optional<std::string>& token) -> std::optional<int64_t> {
    return token ? tok->token_to_id(*token) : std::nullopt;
  };
  b.text.bos_id = id_of(tok->bos_token());
  b.text.eos_id = id_of(tok->eos_token());
  b.text.pad_id = id_of(tok->pad_token());
  b.pad_id = b.text.pad_id.value_or(b.text.eos_id.value_or(0));
  b.text.encode = [tok](const std::string& text, bool add_special) {
    tokenizer::Tokenizer::Encoding e = tok->encode(text, add_special);
    return data::TokenizedText{std::move(e.ids), std::move(e.offsets), std::move(e.special_tokens_mask)};
  };
  auto templates = std::make_shared<tokenizer::ChatTemplates>(tokenizer::load_chat_templates(b.dir));
  if (!templates->templates.empty()) {
    b.text.apply_chat_template = [templates](const nlohmann::ordered_json& messages,
                                             const nlohmann::ordered_json& tools, bool add_generation_prompt) {
      return tokenizer::apply_chat_template(*templates, messages, add_generation_prompt, tools);
    };
  }
  return b;
}

LoaderOptions build_loader_options(const ConfigNode* section, bool default_shuffle) {
  LoaderOptions o;
  o.shuffle = default_shuffle;
  if (section == nullptr || section->is_null()) return o;
  check_section_keys(*section, "dataloader");
  if (section->contains("_target_")) target_of(*section, {kDataLoader});
  o.shuffle = section->get<bool>("shuffle", default_shuffle);
  o.drop_last = section->get<bool>("drop_last", false);
  if (const ConfigNode* c = section->find("collate_fn"); c && !c->is_null()) {
    const std::string target = target_of(*c, {kDefaultCollater, kVlmCollate});
    check_section_keys(*c, "dataloader.collate_fn", target);
    if (target == kVlmCollate) return o;  // its options are read with its dataset (build_vlm_data.h)
    if (c->contains("pad_seq_len_divisible")) o.pad_to_multiple_of = c->get<int64_t>("pad_seq_len_divisible", 1);
  }
  if (o.pad_to_multiple_of < 1)
    throw Error("collate_fn.pad_seq_len_divisible must be >= 1", section->where(), "use 1 for no rounding");
  return o;
}

std::optional<peft::PeftConfig> build_peft_config(const ConfigNode* section) {
  if (section == nullptr || section->is_null()) return std::nullopt;
  check_section_keys(*section, "peft");
  if (section->contains("_target_")) target_of(*section, {kLora});
  peft::PeftConfig c;
  // A single pattern may be given as a string, as NeMo Automodel accepts.
  auto patterns = [&](const char* key) {
    const ConfigNode* n = section->find(key);
    if (n == nullptr || n->is_null()) return std::vector<std::string>{};
    return n->is_list() ? n->as<std::vector<std::string>>() : std::vector<std::string>{n->as_string()};
  };
  c.target_modules = patterns("target_modules");
  c.exclude_modules = patterns("exclude_modules");
  c.target_parameters = patterns("target_parameters");
  c.match_all_linear = section->get<bool>("match_all_linear", c.match_all_linear);
  c.dim = section->get<int64_t>("dim", c.dim);
  c.alpha = section->get<double>("alpha", c.alpha);
  c.dropout = section->get<double>("dropout", c.dropout);
  c.dropout_position = section->get<std::string>("dropout_position", c.dropout_position);
  c.lora_A_init = section->get<std::string>("lora_A_init", c.lora_A_init);
  if (const ConfigNode* d = section->find("lora_dtype"); d && !d->is_null()) c.lora_dtype = parse_dtype(*d);
  c.use_rslora = section->get<bool>("use_rslora", c.use_rslora);
  try {
    peft::validate(c);
  } catch (const Error& e) {
    throw Error("peft: " + e.what_part(), section->where(), e.hint());
  }
  return c;
}

namespace {

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// optimizer.<key>: a finite number >= `min` (torch's own checks: "Invalid learning rate", ...), or `fallback` when
// absent; the error names the key's line.
double optimizer_number(const ConfigNode& section, const char* key, double fallback, double min = 0.0) {
  const ConfigNode* n = section.find(key);
  if (n == nullptr || n->is_null()) return fallback;
  const double v = n->as_double();
  if (!std::isfinite(v) || v < min)
    throw Error(
        std::string("optimizer.") + key + " must be a finite number >= " + number_text(min) + ", got " + number_text(v),
        n->where(), "torch.optim rejects it too");
  return v;
}

}  // namespace

std::vector<nn::NamedParameters> trainable_parameters_per_layer(const models::LanguageModel& model) {
  std::vector<std::string> layers;
  for (int64_t l = 0; l < model.config().num_hidden_layers; ++l) layers.push_back(model.decoder_layer_name(l));
  return nn::parameters_by_module(model, layers, /*trainable_only=*/true);
}

void apply_freeze_config(const ConfigNode* section, models::LanguageModel& model) {
  const bool image_text = dynamic_cast<const models::VisionLanguageModel*>(&model) != nullptr;
  const bool given = section != nullptr && !section->is_null();
  if (given && !image_text)
    throw Error("freeze_config applies to image-text models; this recipe fine-tunes a causal LM", section->where(),
                "remove freeze_config (or load an image-text model with NeMoAutoModelForImageTextToText)");
  if (!image_text) return;
  auto flag = [&](const char* key, bool fallback) { return given ? section->get<bool>(key, fallback) : fallback; };
  // Prefixes of our parameter names (the names transformers 5 writes).
  std::vector<std::string> frozen;
  if (flag("freeze_embeddings", true)) frozen.push_back("language_model.model.embed_tokens.");
  if (flag("freeze_vision_tower", true)) frozen.push_back("vision_tower.");
  if (flag("freeze_language_model", false)) frozen.push_back("language_model.model.");
  (void)flag("freeze_audio_tower", false);  // Gemma 3 has none
  for (auto& [name, p] : model.named_parameters())
    for (const std::string& prefix : frozen)
      if (name.rfind(prefix, 0) == 0) p.set_requires_grad(false);
}

int64_t optimizer_state_block(const ConfigNode& section) {
  try {
    if (target_of(section, {kAdamW, kAdam, kSGD, kAdamW8bit}) == kAdamW8bit)
      return std::max<int64_t>(1, section.get<int64_t>("block_size", optim::AdamW8bitOptions{}.block_size));
  } catch (const Error&) {
    // build_optimizer names what is wrong with the section
  }
  return 1;
}

std::unique_ptr<optim::Optimizer> build_optimizer(const ConfigNode& section, models::LanguageModel& model,
                                                  const std::vector<nn::FlatParameters>& flat_buffers,
                                                  bool flat_state) {
  // bitsandbytes' 8-bit AdamW quantizes its state with its own kernels (no fp32 reference to match on the CPU).
  if (section.contains("_target_") && section.get<std::string>("_target_") == "bitsandbytes.optim.AdamW8bit")
    throw Error("optimizer._target_ bitsandbytes.optim.AdamW8bit is not supported", section.at("_target_").where(),
                "use torchao.optim.AdamW8bit (block-wise 8-bit AdamW state, as torchao computes it)");
  const std::string target = target_of(section, {kAdamW, kAdam, kSGD, kAdamW8bit});
  if (target == kAdamW8bit) {
    check_section_keys(section, "optimizer", target);
    if (section.get<bool>("amsgrad", false))
      throw Error("optimizer.amsgrad is not supported with AdamW8bit", section.at("amsgrad").where(), "remove it");
  } else {
    check_section_keys(section, "optimizer", target);
    if (section.get<bool>("amsgrad", false) || section.get<bool>("maximize", false))
      throw Error("optimizer: amsgrad and maximize are not supported", section.where(), "remove them");
  }

  std::vector<optim::ParamGroup> groups(1);
  if (flat_state) {
    groups[0].flat = flat_buffers;
  } else {
    for (auto& [name, p] : model.named_parameters())
      if (p.requires_grad()) groups[0].params.emplace_back(name, p);
  }
  // bf16 weights train with fp32 master copies (mixed precision): the update runs in fp32 and the bf16 weights the
  // GEMMs read are its rounding, so small updates are not lost.
  const bool bf16_weights = model.dtype() == DType::bf16;
  if (target == kSGD) {
    optim::SGDOptions o;
    o.lr = optimizer_number(section, "lr", o.lr);
    o.momentum = optimizer_number(section, "momentum", 0.0);
    o.dampening = section.get<double>("dampening", 0.0);
    o.nesterov = section.get<bool>("nesterov", false);
    o.weight_decay = optimizer_number(section, "weight_decay", 0.0);
    auto sgd = std::make_unique<optim::SGD>(std::move(groups), o);
    sgd->set_fp32_master_weights(bf16_weights);
    return sgd;
  }
  optim::AdamOptions o = target == kAdam ? optim::AdamOptions{} : optim::AdamW::defaults();
  o.lr = optimizer_number(section, "lr", o.lr);
  o.eps = optimizer_number(section, "eps", o.eps);
  o.weight_decay = optimizer_number(section, "weight_decay", o.weight_decay);
  if (const ConfigNode* betas = section.find("betas"); betas && !betas->is_null()) {
    auto b = betas->as<std::vector<double>>();
    if (b.size() != 2) throw Error("optimizer.betas must have two values", betas->where(), "e.g. [0.9, 0.999]");
    for (double beta : b)
      if (!(beta >= 0.0 && beta < 1.0))
        throw Error("optimizer.betas must lie in [0, 1), got " + number_text(beta), betas->where(),
                    "e.g. [0.9, 0.999]");
    o.beta1 = b[0];
    o.beta2 = b[1];
  }
  if (target == kAdamW8bit) {
    optim::AdamW8bitOptions o8;
    o8.lr = o.lr;
    o8.eps = o.eps;
    o8.weight_decay = o.weight_decay;
    o8.beta1 = o.beta1;
    o8.beta2 = o.beta2;
    o8.block_size = section.get<int64_t>("block_size", o8.block_size);
    if (o8.block_size < 1)
      throw Error("optimizer.block_size must be >= 1", section.at("block_size").where(), "torchao's default is 256");
    std::unique_ptr<optim::Optimizer> adam8;
    try {
      adam8 = std::make_unique<optim::AdamW8bit>(std::move(groups), o8);
    } catch (const Error& e) {
      throw Error(e.what_part(), section.where(), "fix the optimizer section");
    }
    // bf16_stochastic_round (torchao's): bf16 weights without fp32 masters, the fp32 update stochastically rounded.
    const bool stochastic = bf16_weights && section.get<bool>("bf16_stochastic_round", false);
    adam8->set_fp32_master_weights(bf16_weights && !stochastic);
    adam8->set_bf16_stochastic_round(stochastic);
    return adam8;
  }
  std::unique_ptr<optim::Optimizer> adam = target == kAdamW ? std::make_unique<optim::AdamW>(std::move(groups), o)
                                                            : std::make_unique<optim::Adam>(std::move(groups), o);
  adam->set_fp32_master_weights(bf16_weights);
  return adam;
}

std::unique_ptr<optim::OptimizerParamScheduler> build_lr_scheduler(const ConfigNode* section,
                                                                   optim::Optimizer& optimizer, int64_t total_steps) {
  if (section == nullptr || section->is_null()) return nullptr;
  check_section_keys(*section, "lr_scheduler");
  const optim::ParamGroup& g = optimizer.param_groups().front();
  optim::LRSchedulerConfig c =
      optim::default_scheduler_config(g.lr.value_or(0.0), g.weight_decay.value_or(0.0), total_steps);
  c.init_lr = section->get<double>("init_lr", c.init_lr);
  c.max_lr = section->get<double>("max_lr", c.max_lr);
  c.min_lr = section->get<double>("min_lr", c.min_lr);
  c.lr_warmup_steps = section->get<int64_t>("lr_warmup_steps", c.lr_warmup_steps);
  c.lr_decay_steps = section->get<int64_t>("lr_decay_steps", c.lr_decay_steps);
  c.lr_decay_style = section->get<std::string>("lr_decay_style", c.lr_decay_style);
  c.start_wd = section->get<double>("start_weight_decay", c.start_wd);
  c.end_wd = section->get<double>("end_weight_decay", c.end_wd);
  c.wd_incr_steps = section->get<int64_t>("wd_incr_steps", c.wd_incr_steps);
  c.wd_incr_style = section->get<std::string>("weight_decay_incr_style", c.wd_incr_style);
  if (section->contains("wsd_decay_steps")) c.wsd_decay_steps = section->get<int64_t>("wsd_decay_steps");
  c.lr_wsd_decay_style = section->get<std::string>("lr_wsd_decay_style", c.lr_wsd_decay_style);
  try {
    return std::make_unique<optim::OptimizerParamScheduler>(c, &optimizer);
  } catch (const Error& e) {
    throw Error(e.what_part(), section->where(), e.hint().empty() ? "fix the lr_scheduler section" : e.hint());
  }
}

LossFunction build_loss(const ConfigNode* section, bool fused_kernels) {
  LossFunction f;
  if (!fused_kernels) f.kind = LossFunction::Kind::Masked;
  if (section == nullptr || section->is_null()) return f;
  const std::string target = target_of(*section, {kMaskedCE, kChunkedCE, kFusedLinearCE});
  check_section_keys(*section, "loss_fn");
  if (section->get<std::string>("reduction", "sum") != "sum")
    throw Error("loss_fn.reduction must be 'sum'", section->where(),
                "the recipe divides the summed loss by the step's number of label tokens, as NeMo Automodel does");
  f.ignore_index = section->get<int64_t>("ignore_index", -100);
  f.fp32_upcast = section->get<bool>("fp32_upcast", true);
  if (target == kMaskedCE) {
    f.kind = LossFunction::Kind::Masked;
  } else if (target == kChunkedCE) {
    f.kind = LossFunction::Kind::Chunked;
    f.chunk_len = section->get<int64_t>("chunk_len", 32);
  } else {
    f.kind = LossFunction::Kind::FusedLinear;
    f.chunk_len = section->get<int64_t>("chunk_len", 0);
  }
  if (f.chunk_len < 0 || (f.kind == LossFunction::Kind::Chunked && f.chunk_len == 0))
    throw Error(f.kind == LossFunction::Kind::Chunked ? "loss_fn.chunk_len must be > 0 for ChunkedCrossEntropy"
                                                      : "loss_fn.chunk_len must be >= 0 (0: from the memory budget)",
                section->where(), "e.g. 32");
  return f;
}

}  // namespace automodel::recipes
