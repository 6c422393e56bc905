// Oracle entries for models/: load a Hugging Face model directory written by transformers, run it, train one
// step's gradients, save it back, generate. pytest (test_models.py) compares every number with transformers.
#include <fstream>

#include "autograd/engine.h"
#include "kernel_params.h"
#include "models/auto_model.h"
#include "models/generate.h"
#include "models/rope.h"
#include "ops/cast.h"
#include "registry.h"

namespace automodel::oracle {

namespace {

std::unique_ptr<models::LanguageModel> load_model(const OpCall& c, bool trainable) {
  models::LoadOptions options;
  options.dtype = dtype_from_name(c.params.value("dtype", std::string("f32")));
  options.trainable = trainable;
  auto model = models::AutoModelForCausalLM::from_pretrained(c.params.at("model_dir").get<std::string>(), options);
  model->set_kernels(kernels_from(c));
  return model;
}

}  // namespace

// params: model_dir, dtype ("f32" | "bf16"), names_out (with labels), checkpoint_layers (default false), fused and
// flash_attention (kernel_params.h). Inputs:
// input_ids [B, T] i64 or inputs_embeds [B, T, hidden] (f32, cast to the model's dtype), optional attention_mask
// [B, T] i64, optional labels [B, T] i64. Returns [logits as f32]; with
// labels also the loss (causal_lm_loss) and, after backpropagating it, every parameter's gradient (as f32) in
// named_parameters() order, whose names go to the JSON file params["names_out"].
ORACLE_OP("causal_lm", [](const OpCall& c) -> std::vector<Tensor> {
  Tensor labels = c.maybe("labels");
  auto model = load_model(c, labels.defined());
  models::ForwardOptions options;
  options.attention_mask = c.maybe("attention_mask");
  options.checkpoint_layers = c.params.value("checkpoint_layers", false);
  Tensor embeds = c.maybe("inputs_embeds");
  Tensor logits = model->forward(embeds.defined() ? models::DecoderInput::embeds(ops::to_dtype(embeds, model->dtype()))
                                                  : models::DecoderInput(c.in("input_ids")),
                                 options);
  std::vector<Tensor> out{ops::to_dtype(logits, DType::f32)};
  if (!labels.defined()) return out;
  Tensor loss = models::causal_lm_loss(logits, labels);
  autograd::backward(loss);
  out.push_back(ops::to_dtype(loss, DType::f32));
  nlohmann::json names = nlohmann::json::array();
  for (const auto& [name, p] : model->named_parameters()) {
    AM_CHECK(p.grad().defined(), "causal_lm: parameter '", name, "' got no gradient");
    out.push_back(ops::to_dtype(p.grad(), DType::f32));
    names.push_back(name);
  }
  std::ofstream(c.params.at("names_out").get<std::string>()) << names.dump();
  return out;
});

// Loads params["model_dir"] (params["dtype"], default f32) and saves it with save_pretrained to
// params["out_dir"] (params["max_shard_bytes"], default SaveOptions').
ORACLE_OP("save_reload", [](const OpCall& c) -> std::vector<Tensor> {
  auto model = load_model(c, false);
  models::SaveOptions options;
  if (c.params.contains("max_shard_bytes")) options.max_shard_bytes = c.params["max_shard_bytes"].get<int64_t>();
  models::save_pretrained(*model, c.params.at("out_dir").get<std::string>(), options);
  return {};
});

// Greedy (or, with params do_sample, sampled) continuation of the prompt input prompt [T] i64:
// params model_dir, max_new_tokens, eos (list; absent: generation_config.json's). Returns the new tokens [N] i64.
ORACLE_OP("generate", [](const OpCall& c) -> std::vector<Tensor> {
  auto model = load_model(c, false);
  const std::string dir = c.params.at("model_dir").get<std::string>();
  models::GenerationConfig gen = models::read_generation_config(dir, model->config());
  gen.max_new_tokens = c.params.value("max_new_tokens", gen.max_new_tokens);
  gen.do_sample = c.params.value("do_sample", false);
  if (c.params.contains("eos")) gen.eos_token_ids = c.params["eos"].get<std::vector<int64_t>>();
  const Tensor& prompt = c.in("prompt");
  const int64_t* p = prompt.data<int64_t>();
  std::vector<int64_t> tokens = models::generate(*model, std::vector<int64_t>(p, p + prompt.numel()), gen);
  return {Tensor::from_vector(tokens, {static_cast<int64_t>(tokens.size())})};
});

// RoPE frequencies of the config.json in params model_dir for a sequence of params seq_len (default 1) tokens:
// [inv_freq f32, attention_scaling as a one-element f64].
ORACLE_OP("rope_frequencies", [](const OpCall& c) -> std::vector<Tensor> {
  const models::ModelConfig config = models::load_config(c.params.at("model_dir").get<std::string>());
  const models::RopeFrequencies f = models::rope_frequencies(config, c.params.value("seq_len", int64_t(1)));
  return {f.inv_freq, Tensor::from_vector(std::vector<double>{f.attention_scaling}, {1})};
});

}  // namespace automodel::oracle
