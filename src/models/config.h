#pragma once
// config.json of a Hugging Face causal LM, typed and validated. Keys we don't model are kept in `raw` and
// written back on save, so a round trip loses nothing.
//
// Every value is read with its JSON type checked: integer keys take JSON integers only (64.0, 64.5, true and
// "64" are refused, as transformers' strict config classes refuse them), number keys take integers or
// decimals. Sizes must be positive and consistent (heads divide evenly, RoPE dims are even), and the model
// they describe must have a parameter count that fits 64-bit arithmetic and the machine's memory; each
// problem is an Error naming config.json and the key.
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
  // yarn: the ramp's bounds (in rotations), whether they are rounded to whole dims, and (without attention_factor)
  // DeepSeek's mscale / mscale_all_dim (0: absent)
  double beta_fast = 32.0, beta_slow = 1.0;
  bool truncate = true;
  double mscale = 0, mscale_all_dim = 0;
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
  // transformers 5's per-layer-type `rope_parameters` (Gemma 3): `rope` is its "full_attention" group and this
  // its "sliding_attention" group, used by the sliding-window layers.
  std::optional<RopeConfig> sliding_rope;
  // Attention variants.
  std::vector<int64_t> layer_windows;  // per layer: 0 = full attention, else the sliding window
  double attn_logit_softcapping = 0, final_logit_softcapping = 0;
  double query_pre_attn_scalar = 0;  // > 0: attention scale is its inverse square root (Gemma 2)
  // Mixture of experts (num_experts 0: dense): num_local_experts (older Qwen files: num_experts),
  // num_experts_per_tok, moe_intermediate_size (default intermediate_size, as Mixtral's experts use).
  int64_t num_experts = 0, num_experts_per_tok = 0, moe_intermediate_size = 0;
  std::string dtype = "float32";       // as saved ("dtype", or "torch_dtype" in older files)
  nlohmann::json raw;                  // the file as read (updated from the fields on save)
  nlohmann::json generation_config;    // generation_config.json beside it, when there is one
  std::string source = "config.json";  // the file it was read from, for errors

  // Parses and validates the keys every family shares; `source` names the file in errors. Token ids outside
  // [0, vocab_size) are a warning on stderr (as in transformers: Hub configs carry pad_token_id -1), except a
  // pad_token_id beyond the vocabulary, which nn.Embedding(padding_idx) refuses in transformers too.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  nlohmann::json to_json() const;
};

// Reads `key` from j as T (bool, int64_t, double or std::string, with the types checked as above), or
// `fallback` when absent or null; a wrong type is an Error naming the key and `source`.
template <class T>
T json_get(const nlohmann::json& j, const std::string& key, const T& fallback, const std::string& source);

// An Error about config key `key` of `source`: "'key' must be ..., got value".
[[noreturn]] void config_error(const std::string& source, const std::string& key, const std::string& what,
                               const std::string& hint = "fix the value in config.json");

// Number of parameters of the decoder the config describes, counting every optional bias and norm and an
// untied LM head (so at most a few x hidden_size per layer above the exact count). Overflow-checked: an Error
// naming config.json and the key whose size makes a product overflow 64 bits.
int64_t parameter_count_bound(const ModelConfig& config);

// Error naming config.json, the key that makes the model large and the bytes needed when the parameters, at
// bytes_per_parameter each, exceed the machine's physical memory.
void check_parameters_fit_in_memory(const ModelConfig& config, size_t bytes_per_parameter, const std::string& dtype);

}  // namespace automodel::models
