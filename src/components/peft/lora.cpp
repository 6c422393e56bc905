#include "components/peft/lora.h"

#include <cmath>

#include "core/error.h"
#include "core/grad_node.h"
#include "core/rng.h"
#include "models/auto_model.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "ops/matmul.h"
#include "ops/view.h"

namespace automodel::peft {

namespace {

// Linear layers that exist in the model but whose forward does not go through nn::Linear::forward.
// LanguageModel::logits multiplies by lm_head_weight() directly, so an adapter there would be ignored.
bool adapter_would_be_bypassed(const std::string& name) { return name == "lm_head"; }

Tensor init_lora_a(const PeftConfig& c, int64_t in, DType dtype, Generator& gen) {
  Tensor a;
  if (c.lora_A_init == "xavier") {  // xavier_normal_: std = sqrt(2 / (fan_in + fan_out))
    const double std = std::sqrt(2.0 / double(in + c.dim));
    a = ops::scale(randn({c.dim, in}, gen, DType::f64), std);
  } else {  // kaiming_uniform_(a = sqrt(5)): bound = 1 / sqrt(fan_in), NeMo's and peft's default
    const double bound = 1.0 / std::sqrt(double(in));
    a = rand_uniform({c.dim, in}, -bound, bound, gen, DType::f64);
  }
  return ops::to_dtype(a, dtype).detach();
}

}  // namespace

std::vector<std::pair<std::string, nn::Linear*>> lora_modules(models::LanguageModel& model) {
  std::vector<std::pair<std::string, nn::Linear*>> out;
  for (auto& [name, m] : model.named_modules())
    if (auto* lin = dynamic_cast<nn::Linear*>(m); lin && lin->has_lora()) out.emplace_back(name, lin);
  return out;
}

std::vector<std::pair<std::string, models::GroupedExperts*>> expert_modules(models::LanguageModel& model) {
  std::vector<std::pair<std::string, models::GroupedExperts*>> out;
  for (auto& [name, m] : model.named_modules())
    if (auto* experts = dynamic_cast<models::GroupedExperts*>(m)) out.emplace_back(name, experts);
  return out;
}

namespace {

// Throws unless the model's experts can take the adapters config.target_parameters asks for (checked before any
// adapter is attached, so a refused selection changes nothing).
void check_expert_selection(models::LanguageModel& model, const PeftConfig& config) {
  using models::ExpertProjection;
  if (config.target_parameters.empty()) return;
  auto experts = expert_modules(model);
  if (experts.empty())
    throw Error("peft.target_parameters names grouped expert tensors, but the model has no MoE layer", "peft config",
                "target_parameters is for mixture-of-experts models (qwen3_moe, mixtral, gpt_oss); use target_modules");
  for (auto& [name, ex] : experts)
    if (ex->has_lora(ExpertProjection::gate_up) || ex->has_lora(ExpertProjection::down))
      throw Error("peft: module '" + name + "' already has a LoRA adapter", "apply_lora",
                  "apply LoRA once per model, or merge_lora first");
}

// Adapters on the grouped expert tensors config.target_parameters names, in every MoE layer: lora_A [E * r, in]
// kaiming-uniform over in (peft's nn.Linear(in, r * E) init), lora_B zeros. Returns the adapted modules' names.
std::vector<std::string> apply_expert_lora(models::LanguageModel& model, const PeftConfig& config, Generator& gen) {
  using models::ExpertProjection;
  std::vector<std::string> names;
  if (config.target_parameters.empty()) return names;
  auto experts = expert_modules(model);
  for (auto& [name, ex] : experts) {
    Tensor factors[2][2];  // [gate_up | down][A | B]
    for (ExpertProjection p : {ExpertProjection::gate_up, ExpertProjection::down}) {
      if (!selects_parameter(config, p == ExpertProjection::gate_up ? "gate_up_proj" : "down_proj")) continue;
      const Tensor& w = ex->weight(p);
      const DType dt = config.lora_dtype.value_or(w.dtype());
      const int64_t E = ex->num_experts(), in = ex->in_features(p), out = ex->out_features(p);
      const double bound = 1.0 / std::sqrt(double(in));
      Tensor* f = factors[p == ExpertProjection::gate_up ? 0 : 1];
      f[0] = ops::to_dtype(rand_uniform({E * config.dim, in}, -bound, bound, gen, DType::f64), dt).detach();
      f[1] = Tensor::zeros({out, config.dim * E}, dt);
    }
    ex->attach_lora(factors[0][0], factors[0][1], config.scale(), factors[1][0], factors[1][1], config.scale());
    names.push_back(name);
  }
  return names;
}

}  // namespace

std::vector<std::string> apply_lora(models::LanguageModel& model, const PeftConfig& config, uint64_t seed) {
  validate(config);
  std::vector<std::pair<std::string, nn::Linear*>> chosen;
  std::vector<std::string> linear_names;
  for (auto& [name, m] : model.named_modules()) {
    auto* lin = dynamic_cast<nn::Linear*>(m);
    if (!lin) continue;
    linear_names.push_back(name);
    if (selects(config, name, model.module_name(name))) chosen.emplace_back(name, lin);
  }
  if (chosen.empty() && config.target_parameters.empty()) {
    std::string some;
    for (size_t i = 0; i < linear_names.size() && i < 6; ++i) some += (i ? ", " : "") + linear_names[i];
    throw Error("peft: the module selection matches no linear layer of the model", "peft config",
                "patterns match the whole dotted name (use '*.q_proj' or '*_proj'); linear layers here: " + some +
                    (linear_names.size() > 6 ? ", ..." : ""));
  }
  for (auto& [name, lin] : chosen) {
    if (adapter_would_be_bypassed(name))
      throw Error("peft: LoRA on '" + name + "' is not supported (the LM head's product bypasses nn::Linear)",
                  "peft config", "select the projections only, e.g. target_modules: '*_proj'");
    if (lin->has_lora())
      throw Error("peft: module '" + name + "' already has a LoRA adapter", "apply_lora",
                  "apply LoRA once per model, or merge_lora first");
  }
  check_expert_selection(model, config);
  model.set_requires_grad(false);
  Generator gen(seed);
  nn::LoraSettings s;
  s.scale = config.scale();
  s.dropout = config.dropout;
  s.dropout_position =
      config.dropout_position == "pre" ? ops::LoraDropoutPosition::pre : ops::LoraDropoutPosition::post;
  std::vector<std::string> names;
  for (auto& [name, lin] : chosen) {
    const DType dt = config.lora_dtype.value_or(lin->weight.dtype());
    Tensor a = init_lora_a(config, lin->in_features(), dt, gen);
    Tensor b = Tensor::zeros({lin->out_features(), config.dim}, dt);
    lin->attach_lora(a, b, s);
    names.push_back(name);
  }
  for (const std::string& name : apply_expert_lora(model, config, gen)) names.push_back(name);
  return names;
}

void set_lora_training(models::LanguageModel& model, bool training) {
  for (auto& [name, lin] : lora_modules(model)) lin->lora_settings().training = training;
}

std::vector<std::string> merge_lora(models::LanguageModel& model) {
  NoGradGuard no_grad;
  std::vector<std::string> names;
  for (auto& [name, lin] : lora_modules(model)) {
    const DType acc = lin->weight.dtype() == DType::f64 ? DType::f64 : DType::f32;
    Tensor delta = ops::matmul(ops::to_dtype(lin->lora_B(), acc), ops::to_dtype(lin->lora_A(), acc));
    Tensor merged = ops::to_dtype(lin->weight, acc) + ops::scale(delta, lin->lora_settings().scale);
    ops::copy_into(lin->weight, ops::to_dtype(merged, lin->weight.dtype()));  // keeps flat-buffer views bound
    lin->detach_lora();
    names.push_back(name);
  }
  for (auto& [name, ex] : expert_modules(model)) {
    bool merged = false;
    for (models::ExpertProjection p : {models::ExpertProjection::gate_up, models::ExpertProjection::down}) {
      if (!ex->has_lora(p)) continue;
      Tensor& w = ex->weight(p);
      const Tensor delta = ex->lora_delta(p);
      const Tensor sum = ops::to_dtype(w, delta.dtype()) + delta;
      ops::copy_into(w, ops::to_dtype(sum, w.dtype()));  // keeps flat-buffer views bound
      merged = true;
    }
    if (!merged) continue;
    ex->detach_lora();
    names.push_back(name);
  }
  return names;
}

void save_merged_pretrained(models::LanguageModel& model, const std::string& dir) {
  merge_lora(model);
  models::save_pretrained(model, dir);
}

}  // namespace automodel::peft
