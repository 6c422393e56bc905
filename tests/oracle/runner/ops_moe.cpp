// Oracle entries for the mixture-of-experts families: the training objective with the router's load-balancing loss,
// as transformers' *ForCausalLM computes it with output_router_logits (test_moe.py compares every number).
#include <fstream>

#include "autograd/engine.h"
#include "kernel_params.h"
#include "models/auto_model.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "registry.h"

namespace automodel::oracle {

// params: model_dir, dtype ("f32" | "bf16"), names_out, checkpoint_layers (default false), fused and flash_attention
// (kernel_params.h). Inputs: input_ids [B, T] i64, optional attention_mask [B, T] i64, labels [B, T] i64. Returns
// [logits as f32, loss (causal_lm_loss plus the model's auxiliary losses), the auxiliary losses' sum (0 when the
// model has none)], then, after backpropagating the loss, every parameter's gradient (as f32) in named_parameters()
// order, whose names go to the JSON file params["names_out"].
ORACLE_OP("moe_causal_lm", [](const OpCall& c) -> std::vector<Tensor> {
  models::LoadOptions load;
  load.dtype = dtype_from_name(c.params.value("dtype", std::string("f32")));
  auto model = models::AutoModelForCausalLM::from_pretrained(c.params.at("model_dir").get<std::string>(), load);
  model->set_kernels(kernels_from(c));
  models::ForwardOptions options;
  options.attention_mask = c.maybe("attention_mask");
  options.checkpoint_layers = c.params.value("checkpoint_layers", false);
  models::DecoderOutput decoded = model->forward_hidden(models::DecoderInput(c.in("input_ids")), options);
  Tensor logits = model->logits(decoded.hidden);
  Tensor loss = models::causal_lm_loss(logits, c.in("labels"));
  Tensor aux = Tensor::scalar(0.0);
  for (const Tensor& a : decoded.aux_losses) aux = ops::add(aux, ops::to_dtype(a, DType::f32));
  loss = ops::add(loss, aux);
  autograd::backward(loss);
  std::vector<Tensor> out{ops::to_dtype(logits, DType::f32), ops::to_dtype(loss, DType::f32), aux.detach()};
  nlohmann::json names = nlohmann::json::array();
  for (const auto& [name, p] : model->named_parameters()) {
    AM_CHECK(p.grad().defined(), "moe_causal_lm: parameter '", name, "' got no gradient");
    out.push_back(ops::to_dtype(p.grad(), DType::f32));
    names.push_back(name);
  }
  std::ofstream(c.params.at("names_out").get<std::string>()) << names.dump();
  return out;
});

}  // namespace automodel::oracle
