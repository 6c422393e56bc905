#pragma once
// Text generation with a KV cache: greedy or sampled (temperature, top-k, top-p, seeded),
// stopping at end-of-sequence ids.
#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.h"
#include "models/language_model.h"

namespace automodel::models {

struct GenerationConfig {
  int64_t max_new_tokens = 32;
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 0;   // 0: off
  double top_p = 1.0;  // 1: off
  uint64_t seed = 0;
  std::vector<int64_t> eos_token_ids;  // generation stops after emitting one of these
};

// Defaults from <model_dir>/generation_config.json when present, else from config.json's
// eos_token_id (sampling settings as transformers reads them).
GenerationConfig read_generation_config(const std::string& model_dir, const ModelConfig& config);

// The prompt's continuation (new tokens only, including a final eos if one was produced).
std::vector<int64_t> generate(const LanguageModel& model, const std::vector<int64_t>& prompt,
                              const GenerationConfig& config);

// One next token from one position's logits: argmax (the first on ties) unless config.do_sample; when
// sampling, transformers' warper order: temperature, top-k (ties with the k-th stay), top-p (sorted
// ascending, tokens with cumulative probability <= 1 - top_p dropped, the most likely always kept),
// then softmax and one draw from `gen` (one Philox block per call).
int64_t select_next_token(std::vector<float> logits, const GenerationConfig& config, Generator& gen);

// log p(token[i] | tokens[< i]) for i = 1 .. n-1, in fp32 from one forward pass.
std::vector<double> sequence_logprobs(const LanguageModel& model, const std::vector<int64_t>& tokens);

}  // namespace automodel::models
