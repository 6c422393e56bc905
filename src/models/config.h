#pragma once
// config.json of a Hugging Face causal LM, typed. Keys we don't model are kept in `raw` and
// written back on save, so a round trip loses nothing.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace automodel::models {

// RoPE parameters: transformers 5's `rope_parameters`, or the older top-level `rope_theta` +
// `rope_scaling` (both are read).
struct RopeConfig {
  std::string type = "default";  // default | linear | dynamic | llama3 | longrope | yarn
  double theta = 10000.0;
  double factor = 1.0;
  double partial_rotary_factor = 1.0;
  // llama3
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;  // 0: max_position_embeddings
  // longrope
  std::vector<double> short_factor, long_factor;
  // longrope / yarn
  std::optional<double> attention_factor;
  double beta_fast = 32.0, beta_slow = 1.0;
  bool truncate = true;
};

struct ModelConfig {
  std::string model_type;
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0;
  int64_t num_attention_heads = 0, num_key_value_heads = 0, head_dim = 0, max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  std::string hidden_act = "silu";
  bool tie_word_embeddings = false, attention_bias = false, mlp_bias = false;
  std::optional<int64_t> pad_token_id, bos_token_id;
  std::vector<int64_t> eos_token_ids;
  RopeConfig rope;
  // Attention variants.
  std::vector<int64_t> layer_windows;  // per layer: 0 = full attention, else the sliding window
  double attn_logit_softcapping = 0, final_logit_softcapping = 0;
  double query_pre_attn_scalar = 0;  // > 0: attention scale is its inverse square root (Gemma 2)
  std::string dtype = "float32";     // as saved ("dtype", or "torch_dtype" in older files)
  nlohmann::json raw;                // the file as read (updated from the fields on save)
  nlohmann::json generation_config;  // generation_config.json beside it, when there is one

  // Parses the keys every family shares; `source` names the file in errors.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  nlohmann::json to_json() const;
};

// Reads `key` from j as T, or `fallback` when absent or null; a wrong type is an Error naming
// the key and `source`.
template <class T>
T json_get(const nlohmann::json& j, const std::string& key, const T& fallback, const std::string& source);

}  // namespace automodel::models
