#pragma once
// The decoder-only transformer behind every supported family: embeddings, N decoder layers, final norm and LM
// head. A family file (llama.cpp, gemma2.cpp, ...) turns a config.json into an Architecture: the stock layers'
// flags, the factory that builds each layer, and the checkpoint layout. Parameter names are Hugging Face's.
#include <functional>
#include <memory>
#include <vector>

#include "models/config.h"
#include "models/decoder_layer.h"
#include "models/language_model.h"
#include "models/state_dict_adapter.h"

namespace automodel::models {

// Turns what the layers appended to aux_losses into the model's auxiliary losses (the MoE families: per-layer router
// statistics into one load-balancing loss).
using AuxLossFinisher = std::function<std::vector<Tensor>(std::vector<Tensor> appended)>;

// What a family decides from its config.
struct Architecture {
  DecoderSpec spec;
  LayerFactory make_layer = dense_decoder_layer;
  std::shared_ptr<const StateDictAdapter> state_dict_adapter = std::make_shared<StateDictAdapter>();
  AuxLossFinisher finish_aux_losses = nullptr;  // null: the appended tensors are the losses
};

class CausalLM : public LanguageModel {
 public:
  CausalLM(ModelConfig config, Architecture architecture, DType dtype);
  ~CausalLM() override;

  const ModelConfig& config() const override { return config_; }
  const DecoderSpec& spec() const { return architecture_.spec; }
  DType dtype() const override { return dtype_; }

  using LanguageModel::forward;
  DecoderOutput forward_hidden(const DecoderInput& input, const ForwardOptions& options = {}) const override;
  Tensor embed(const Tensor& input_ids) const override;
  Tensor logits(const Tensor& hidden) const override;
  Tensor lm_head_weight() const override;

  void set_kernels(const KernelOptions& kernels) override;
  const KernelOptions& kernels() const override { return kernels_; }

  KVCache make_cache(int64_t batch, int64_t capacity) const override;

  const StateDictAdapter& state_dict_adapter() const override { return *architecture_.state_dict_adapter; }

 private:
  struct Impl;
  ModelConfig config_;
  Architecture architecture_;
  DType dtype_;
  KernelOptions kernels_;
  std::unique_ptr<Impl> impl_;
};

// transformers' causal-LM loss: logits[:, :-1] against labels[:, 1:], mean over labels != -100.
Tensor causal_lm_loss(const Tensor& logits, const Tensor& labels);

}  // namespace automodel::models
