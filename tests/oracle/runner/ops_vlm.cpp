// Oracle entries for image-text-to-text models (models/vision_language_model.h): load a directory written by
// transformers, run it on token ids and pixel values, backpropagate, save, generate. pytest
// (test_vlm_models.py) compares every number with transformers' Gemma3ForConditionalGeneration.
#include <fstream>

#include "autograd/engine.h"
#include "kernel_params.h"
#include "models/idefics3.h"
#include "models/vision_language_model.h"
#include "ops/cast.h"
#include "registry.h"

namespace automodel::oracle {

namespace {

std::unique_ptr<models::VisionLanguageModel> load_vlm(const OpCall& c, bool trainable) {
  models::LoadOptions options;
  options.dtype = dtype_from_name(c.params.value("dtype", std::string("f32")));
  options.trainable = trainable;
  auto model = models::load_vision_language_model(c.params.at("model_dir").get<std::string>(), options);
  model->set_kernels(kernels_from(c));
  return model;
}

}  // namespace

// params: model_dir, dtype ("f32" | "bf16"), names_out (with labels), checkpoint_layers, fused / flash_attention
// (kernel_params.h). Inputs: input_ids [B, T] i64, optional pixel_values [N, C, H, W] f32, optional
// token_type_ids [B, T] i64, optional pixel_attention_mask (Idefics 3), optional attention_mask [B, T] i64, optional
// labels [B, T] i64. Returns [logits as f32]; with labels also the loss (causal_lm_loss) and every parameter's gradient
// (f32) in named_parameters() order, under transformers' module names (VisionLanguageModel::module_name, written to
// params["names_out"]).
ORACLE_OP("vlm", [](const OpCall& c) -> std::vector<Tensor> {
  Tensor labels = c.maybe("labels");
  auto model = load_vlm(c, labels.defined());
  models::ForwardOptions options;
  options.attention_mask = c.maybe("attention_mask");
  options.checkpoint_layers = c.params.value("checkpoint_layers", false);
  models::DecoderInput input(c.in("input_ids"));
  input.pixel_values = c.maybe("pixel_values");
  input.token_type_ids = c.maybe("token_type_ids");
  input.pixel_attention_mask = c.maybe("pixel_attention_mask");
  Tensor logits = model->forward(input, options);
  std::vector<Tensor> out{ops::to_dtype(logits, DType::f32)};
  if (!labels.defined()) return out;
  Tensor loss = models::causal_lm_loss(logits, labels);
  autograd::backward(loss);
  out.push_back(ops::to_dtype(loss, DType::f32));
  nlohmann::json names = nlohmann::json::array();
  for (const auto& [name, p] : model->named_parameters()) {
    AM_CHECK(p.grad().defined(), "vlm: parameter '", name, "' got no gradient");
    out.push_back(ops::to_dtype(p.grad(), DType::f32));
    names.push_back(model->module_name(name));
  }
  std::ofstream(c.params.at("names_out").get<std::string>()) << names.dump();
  return out;
});

// Loads params["model_dir"] and saves it to params["out_dir"] (params["max_shard_bytes"], default SaveOptions').
ORACLE_OP("vlm_save", [](const OpCall& c) -> std::vector<Tensor> {
  auto model = load_vlm(c, false);
  models::SaveOptions options;
  if (c.params.contains("max_shard_bytes")) options.max_shard_bytes = c.params["max_shard_bytes"].get<int64_t>();
  models::save_pretrained(*model, c.params.at("out_dir").get<std::string>(), options);
  return {};
});

// Greedy continuation of input prompt [T] i64 with input pixel_values (the prompt's images): params model_dir,
// max_new_tokens, eos (list; absent: generation_config.json's). Returns the new tokens [N] i64.
ORACLE_OP("vlm_generate", [](const OpCall& c) -> std::vector<Tensor> {
  auto model = load_vlm(c, false);
  const std::string dir = c.params.at("model_dir").get<std::string>();
  models::GenerationConfig gen = models::read_generation_config(dir, model->config());
  gen.max_new_tokens = c.params.value("max_new_tokens", gen.max_new_tokens);
  gen.do_sample = false;
  if (c.params.contains("eos")) gen.eos_token_ids = c.params["eos"].get<std::vector<int64_t>>();
  const Tensor& prompt = c.in("prompt");
  const int64_t* p = prompt.data<int64_t>();
  std::vector<int64_t> tokens =
      models::generate(*model, std::vector<int64_t>(p, p + prompt.numel()), c.maybe("pixel_values"), gen);
  return {Tensor::from_vector(tokens, {static_cast<int64_t>(tokens.size())})};
});

// log p(tokens[i] | tokens[< i], images) of input tokens [T] i64 with input pixel_values: params model_dir.
// Returns [T - 1] f64.
ORACLE_OP("vlm_logprobs", [](const OpCall& c) -> std::vector<Tensor> {
  auto model = load_vlm(c, false);
  const Tensor& tokens = c.in("tokens");
  const int64_t* p = tokens.data<int64_t>();
  std::vector<double> lp =
      models::sequence_logprobs(*model, std::vector<int64_t>(p, p + tokens.numel()), c.maybe("pixel_values"));
  return {Tensor::from_vector(lp, {static_cast<int64_t>(lp.size())})};
});

// Idefics 3's bucketed position ids (models::bucketed_position_ids) of input patch_mask [N, rows, cols] i64 on a
// params["side"] x side position grid -> [N, rows * cols] i64.
ORACLE_OP("vlm_position_ids", [](const OpCall& c) -> std::vector<Tensor> {
  const Tensor mask = ops::to_dtype(c.in("patch_mask"), DType::i64);
  const int64_t N = mask.size(0), rows = mask.size(1), cols = mask.size(2);
  const int64_t* m = mask.data<int64_t>();
  std::vector<int64_t> out;
  for (int64_t n = 0; n < N; ++n) {
    std::vector<uint8_t> tile(m + n * rows * cols, m + (n + 1) * rows * cols);
    const std::vector<int64_t> ids = models::bucketed_position_ids(tile, rows, cols, c.params.at("side"), n);
    out.insert(out.end(), ids.begin(), ids.end());
  }
  return {Tensor::from_vector(out, {N, rows * cols})};
});

}  // namespace automodel::oracle
