// Oracle entries for LoRA: the fused lora_linear op, and a causal LM with a peft adapter (loaded from
// a peft-saved directory or applied from a PeftConfig) run forward, backward and AdamW steps, saving
// the adapter and the merged model for peft / transformers to load. test_peft.py compares with peft.
#include <fstream>

#include "autograd/engine.h"
#include "components/optim/optimizer.h"
#include "components/peft/adapter_io.h"
#include "components/peft/lora.h"
#include "kernel_params.h"
#include "models/auto_model.h"
#include "ops/cast.h"
#include "ops/lora_linear.h"
#include "ops/view.h"
#include "registry.h"

namespace automodel::oracle {

// Inputs x, weight, optional bias, lora_a, lora_b; params scale (default 1). Returns [y].
ORACLE_OP("lora_linear", [](const OpCall& c) -> std::vector<Tensor> {
  ops::LoraOptions o;
  o.scale = c.params.value("scale", 1.0);
  return {ops::lora_linear(c.in("x"), c.in("weight"), c.maybe("bias"), c.in("lora_a"), c.in("lora_b"), o)};
});

// params: model_dir, dtype (default f32), fused and flash_attention (kernel_params.h); adapter_dir (load_adapter) or
// peft (a PeftConfig as JSON: target_modules, exclude_modules, match_all_linear, target_parameters, dim, alpha,
// use_rslora, lora_A_init) with seed; names_out; steps, lr, weight_decay (AdamW on the adapters over the same
// batch); save_dir (adapter saved after the steps), merged_dir (merged model saved after the steps). Inputs
// input_ids, optional attention_mask, labels. Returns [logits f32, loss f32, trainable parameter count i64, each
// adapter gradient (first step), each adapter parameter after the steps], adapter names to names_out.
ORACLE_OP("peft_model", [](const OpCall& c) -> std::vector<Tensor> {
  models::LoadOptions lo;
  lo.dtype = dtype_from_name(c.params.value("dtype", std::string("f32")));
  lo.trainable = false;
  auto model = models::AutoModelForCausalLM::from_pretrained(c.params.at("model_dir").get<std::string>(), lo);
  peft::PeftConfig config;
  if (c.params.contains("adapter_dir")) {
    config = peft::load_adapter(*model, c.params["adapter_dir"].get<std::string>()).config;
  } else {
    const auto& p = c.params.at("peft");
    config.target_modules = p.value("target_modules", std::vector<std::string>{});
    config.exclude_modules = p.value("exclude_modules", std::vector<std::string>{});
    config.target_parameters = p.value("target_parameters", std::vector<std::string>{});
    config.match_all_linear = p.value("match_all_linear", false);
    config.dim = p.value("dim", int64_t(8));
    config.alpha = p.value("alpha", 32.0);
    config.use_rslora = p.value("use_rslora", false);
    config.lora_A_init = p.value("lora_A_init", std::string("xavier"));
    if (p.contains("lora_dtype")) config.lora_dtype = peft::parse_lora_dtype(p["lora_dtype"].get<std::string>());
    peft::apply_lora(*model, config, c.params.value("seed", uint64_t(0)));
  }
  model->set_kernels(kernels_from(c));
  models::ForwardOptions options;
  options.attention_mask = c.maybe("attention_mask");
  const Tensor& ids = c.in("input_ids");
  const Tensor& labels = c.in("labels");

  optim::NamedTensors trainable;
  nlohmann::json names = nlohmann::json::array();
  for (const auto& [name, p] : model->named_parameters())
    if (p.requires_grad()) trainable.emplace_back(name, p), names.push_back(name);
  std::ofstream(c.params.at("names_out").get<std::string>()) << names.dump();

  Tensor logits = model->forward(ids, options);
  Tensor loss = models::causal_lm_loss(logits, labels);
  autograd::backward(loss);
  std::vector<Tensor> out{ops::to_dtype(logits.detach(), DType::f32), ops::to_dtype(loss.detach(), DType::f32),
                          Tensor::scalar(double(model->num_parameters(true)), DType::i64)};
  for (const auto& [name, p] : trainable) out.push_back(ops::clone(ops::to_dtype(p.grad(), DType::f32)));

  const int steps = c.params.value("steps", 0);
  if (steps > 0) {
    optim::AdamOptions ao = optim::AdamW::defaults();
    ao.lr = c.params.value("lr", 1e-3);
    ao.weight_decay = c.params.value("weight_decay", 0.01);
    optim::AdamW opt(trainable, ao);
    for (int s = 0; s < steps; ++s) {
      if (s > 0) {
        opt.zero_grad();
        autograd::backward(models::causal_lm_loss(model->forward(ids, options), labels));
      }
      opt.step();
    }
  }
  for (const auto& [name, p] : trainable) out.push_back(ops::clone(p.detach()));
  if (c.params.contains("save_dir"))
    peft::save_adapter(*model, c.params["save_dir"].get<std::string>(), config,
                       c.params.at("model_dir").get<std::string>());
  if (c.params.contains("merged_dir")) peft::save_merged_pretrained(*model, c.params["merged_dir"].get<std::string>());
  return out;
});

}  // namespace automodel::oracle
