#pragma once
// The config.json of a tiny decoder (2 layers, hidden 32, GQA 4/2, vocab 97) that unit tests build models from.
#include <nlohmann/json.hpp>
#include <string>

namespace automodel::testing {

inline nlohmann::json tiny_model_config(const std::string& model_type = "llama") {
  return nlohmann::json{{"model_type", model_type},     {"vocab_size", 97},       {"hidden_size", 32},
                        {"intermediate_size", 64},      {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                        {"num_key_value_heads", 2},     {"rms_norm_eps", 1e-5},   {"max_position_embeddings", 128},
                        {"tie_word_embeddings", false}, {"eos_token_id", 2},      {"pad_token_id", 0}};
}

}  // namespace automodel::testing
