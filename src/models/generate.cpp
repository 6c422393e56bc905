#include "models/generate.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>
#include <optional>
#include <type_traits>

#include "core/allocator.h"
#include "core/error.h"
#include "core/grad_node.h"
#include "core/rng.h"
#include "io/hf_dir.h"
#include "io/safetensors.h"
#include "ops/cast.h"
#include "ops/softmax.h"
#include "ops/view.h"

namespace automodel::models {

namespace {

// An optional number from generation_config.json; null counts as absent, another type is an Error.
template <class T>
T read_number(const nlohmann::json& j, const char* key, T fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  bool ok = std::is_same_v<T, bool> ? it->is_boolean()
            : std::is_integral_v<T> ? it->is_number_integer()
                                    : it->is_number();
  if (!ok)
    throw Error(std::string("'") + key + "' should be " +
                    (std::is_same_v<T, bool> ? "true or false"
                     : std::is_integral_v<T> ? "an integer"
                                             : "a number") +
                    ", got " + it->dump(),
                source, "fix the value or remove the key");
  return it->get<T>();
}

// eos_token_id as an int or a list of ints; nullopt when absent or null.
std::optional<std::vector<int64_t>> read_id_list(const nlohmann::json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  std::vector<int64_t> ids;
  if (it->is_number_integer()) {
    ids.push_back(it->get<int64_t>());
  } else if (it->is_array() && std::all_of(it->begin(), it->end(), [](auto& v) { return v.is_number_integer(); })) {
    for (auto& v : *it) ids.push_back(v.get<int64_t>());
  } else {
    throw Error(std::string("'") + key + "' should be an integer or a list of integers, got " + it->dump(), source,
                "fix the value or remove the key");
  }
  return ids;
}

void check_config(const GenerationConfig& c) {
  AM_CHECK(c.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got ", c.max_new_tokens);
  if (!c.do_sample) return;
  AM_CHECK(c.temperature > 0 && std::isfinite(c.temperature),
           "generate: temperature must be a positive number when sampling, got ", c.temperature,
           " (for greedy decoding turn sampling off)");
  AM_CHECK(c.top_k >= 0, "generate: top_k must be >= 0 (0 = off), got ", c.top_k);
  AM_CHECK(c.top_p > 0 && c.top_p <= 1, "generate: top_p must be in (0, 1] (1 = off), got ", c.top_p);
}

void check_ids(const LanguageModel& model, const std::vector<int64_t>& ids, const char* what) {
  const int64_t vocab = model.config().vocab_size;
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= vocab)
      throw Error(
          detail::str(what, ": token id ", ids[i], " at position ", i, " is outside the vocabulary [0, ", vocab, ")"),
          "generate", "pass ids below the model's vocab_size");
}

const char* const kNonFiniteLogitsHint =
    "activations overflow (weights read from files are checked to be finite): run in float32 (--dtype f32), or "
    "check the model's weights";

// The last position's logits of a [1, T, V] tensor, as floats; a NaN or Inf among them is an Error (a token drawn
// from them would mean nothing).
std::vector<float> last_logits(const Tensor& logits, int64_t position) {
  const int64_t T = logits.size(1);
  std::vector<float> out = ops::slice(logits, 1, T - 1, T).to_floats();
  for (size_t i = 0; i < out.size(); ++i)
    if (!std::isfinite(out[i]))
      throw Error(
          detail::str("the model produced a non-finite logit (", out[i], " for token ", i, ") at position ", position),
          "generate", kNonFiniteLogitsHint);
  return out;
}

// The KV cache holds 2 x layers x capacity x kv_heads x head_dim values; refuse a capacity whose cache cannot fit.
void check_cache_size(const LanguageModel& model, size_t prompt_len, int64_t max_new_tokens) {
  const ModelConfig& c = model.config();
  uint64_t bytes = 0;
  bool wraps = __builtin_add_overflow(uint64_t(prompt_len), uint64_t(max_new_tokens), &bytes);
  for (uint64_t f : {uint64_t(2), uint64_t(c.num_hidden_layers), uint64_t(c.num_key_value_heads), uint64_t(c.head_dim),
                     uint64_t(dtype_size(model.dtype()))})
    wraps = wraps || __builtin_mul_overflow(bytes, f, &bytes);
  if (!wraps && bytes <= physical_memory_bytes()) return;
  throw Error(
      detail::str("max_new_tokens ", max_new_tokens, ": the KV cache for ", prompt_len, " prompt + ", max_new_tokens,
                  " new positions needs ", wraps ? std::string("more than 2^64 bytes") : byte_count(bytes),
                  ", more than this machine's physical memory (", byte_count(physical_memory_bytes()), ")"),
      "generate", "generate fewer tokens (--max-new-tokens)");
}

Tensor ids_tensor(const std::vector<int64_t>& ids) { return Tensor::from_vector(ids, {1, int64_t(ids.size())}); }

// Uniform double in [0, 1) with 53 random bits from one Philox block.
double next_uniform(Generator& gen) {
  std::array<uint32_t, 4> r = philox4x32(gen.seed(), gen.reserve(1));
  uint64_t bits = (uint64_t(r[0]) << 21) ^ (uint64_t(r[1]) >> 11);
  return double(bits & ((uint64_t(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

}  // namespace

GenerationConfig read_generation_config(const std::string& model_dir, const ModelConfig& config) {
  GenerationConfig g;
  g.eos_token_ids = config.eos_token_ids;
  const std::string path = (std::filesystem::path(model_dir) / "generation_config.json").string();
  if (!std::filesystem::exists(path)) return g;
  nlohmann::json j = io::read_json_file(path);
  if (!j.is_object()) throw Error("generation_config.json should hold a JSON object", path);
  // transformers' GenerationConfig defaults for keys the file leaves out.
  g.do_sample = read_number<bool>(j, "do_sample", false, path);
  g.temperature = read_number<double>(j, "temperature", 1.0, path);
  g.top_k = read_number<int64_t>(j, "top_k", 50, path);
  g.top_p = read_number<double>(j, "top_p", 1.0, path);
  g.max_new_tokens = read_number<int64_t>(j, "max_new_tokens", g.max_new_tokens, path);
  if (auto eos = read_id_list(j, "eos_token_id", path)) g.eos_token_ids = *eos;
  return g;
}

int64_t select_next_token(std::vector<float> logits, const GenerationConfig& config, Generator& gen) {
  AM_CHECK(!logits.empty(), "select_next_token: no logits");
  const size_t V = logits.size();
  if (!config.do_sample) return int64_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  check_config(config);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  // 1. temperature (as TemperatureLogitsWarper: scores / t, in fp32).
  if (config.temperature != 1.0)
    for (float& x : logits) x = x / float(config.temperature);
  // 2. top-k: drop every logit below the k-th largest (ties with it stay).
  if (config.top_k > 0 && size_t(config.top_k) < V) {
    std::vector<float> sorted = logits;
    std::nth_element(sorted.begin(), sorted.begin() + (config.top_k - 1), sorted.end(), std::greater<float>());
    const float kth = sorted[size_t(config.top_k - 1)];
    for (float& x : logits)
      if (x < kth) x = kNegInf;
  }
  // 3. top-p: sorted ascending, drop tokens whose cumulative probability is <= 1 - top_p; the most
  // likely token always stays.
  if (config.top_p < 1.0) {
    std::vector<size_t> order(V);
    std::iota(order.begin(), order.end(), size_t(0));
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return logits[a] < logits[b]; });
    const float mx = logits[order.back()];
    double total = 0;
    std::vector<double> p(V);
    for (size_t i = 0; i < V; ++i) total += (p[i] = std::exp(double(logits[i]) - double(mx)));
    double cum = 0;
    for (size_t r = 0; r + 1 < V; ++r) {
      size_t i = order[r];
      cum += p[i] / total;
      if (cum <= 1.0 - config.top_p) logits[i] = kNegInf;
    }
  }
  // 4. softmax and one draw by inverse CDF.
  const float mx = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(V);
  double total = 0;
  for (size_t i = 0; i < V; ++i)
    total += (p[i] = logits[i] == kNegInf ? 0.0 : std::exp(double(logits[i]) - double(mx)));
  const double u = next_uniform(gen) * total;
  double cum = 0;
  size_t last = 0;
  for (size_t i = 0; i < V; ++i) {
    if (p[i] == 0) continue;
    last = i;
    cum += p[i];
    if (u < cum) return int64_t(i);
  }
  return int64_t(last);  // rounding: u landed at the very top
}

std::vector<int64_t> generate(const LanguageModel& model, const std::vector<int64_t>& prompt,
                              const GenerationConfig& config) {
  if (prompt.empty())
    throw Error("generate: the prompt is empty", "generate", "pass at least one token id (e.g. the bos token)");
  check_ids(model, prompt, "generate");
  check_config(config);
  std::vector<int64_t> out;
  if (config.max_new_tokens == 0) return out;

  check_cache_size(model, prompt.size(), config.max_new_tokens);
  NoGradGuard no_grad;
  Generator gen(config.seed);
  KVCache cache = model.make_cache(1, int64_t(prompt.size()) + config.max_new_tokens);
  ForwardOptions options;
  options.cache = &cache;
  // Prefill: the LM head runs on the last position only.
  Tensor hidden = model.forward_hidden(ids_tensor(prompt), options).hidden;
  const int64_t T = hidden.size(1);
  std::vector<float> logits = last_logits(model.logits(ops::slice(hidden, 1, T - 1, T)), T - 1);
  // longrope switches to its long factors once the sequence outgrows the pretraining length; the
  // cached keys were rotated with the short ones, so (as transformers' Phi-3 does) the whole
  // sequence is recomputed once at that point.
  const RopeConfig& rope = model.config().rope;
  const int64_t switch_len = rope.type == "longrope" ? rope.original_max_position_embeddings + 1 : 0;
  std::vector<int64_t> sequence = prompt;
  for (int64_t step = 0;; ++step) {
    int64_t next = select_next_token(std::move(logits), config, gen);
    out.push_back(next);
    sequence.push_back(next);
    if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), next) != config.eos_token_ids.end()) break;
    if (step + 1 == config.max_new_tokens) break;
    if (switch_len > 0 && int64_t(sequence.size()) >= switch_len && cache.length < switch_len) {
      cache.length = 0;
      logits = last_logits(model.forward(ids_tensor(sequence), options), int64_t(sequence.size()) - 1);
    } else {
      logits = last_logits(model.forward(ids_tensor({next}), options), int64_t(sequence.size()) - 1);
    }
  }
  return out;
}

std::vector<double> sequence_logprobs(const LanguageModel& model, const std::vector<int64_t>& tokens) {
  if (tokens.size() < 2)
    throw Error(detail::str("logprobs: need at least 2 tokens, got ", tokens.size()), "logprobs",
                "pass the whole sequence: the first token is the context of the second");
  check_ids(model, tokens, "logprobs");
  NoGradGuard no_grad;
  const int64_t n = int64_t(tokens.size());
  Tensor logits = model.forward(ids_tensor(tokens));  // [1, n, V]
  // Log-probabilities of finite logits are finite (computed in f64); a NaN or Inf logit is an Error, not a NaN in
  // the output.
  if (const io::NonFinite bad = io::find_non_finite(logits); bad.count > 0)
    throw Error(
        detail::str("the model produced ", bad.count, " non-finite logit(s) (first: ", bad.first_value, " for token ",
                    bad.first % logits.size(2), " at position ", bad.first / logits.size(2), ")"),
        "logprobs", kNonFiniteLogitsHint);
  Tensor lp = ops::log_softmax(ops::to_dtype(ops::slice(logits, 1, 0, n - 1), DType::f64), -1);  // [1, n-1, V]
  lp = ops::contiguous(lp);
  const int64_t V = lp.size(-1);
  const double* p = lp.data<double>();
  std::vector<double> out(static_cast<size_t>(n - 1));
  for (int64_t i = 0; i + 1 < n; ++i) out[size_t(i)] = p[i * V + tokens[size_t(i + 1)]];
  return out;
}

}  // namespace automodel::models
