#include "models/vision_language_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>

#include "core/error.h"
#include "core/grad_node.h"
#include "io/hf_dir.h"
#include "io/safetensors.h"
#include "models/gemma3_vision.h"
#include "models/idefics3.h"
#include "nn/init.h"
#include "nn/linear.h"
#include "nn/norm.h"
#include "ops/cast.h"
#include "ops/concat.h"
#include "ops/softmax.h"
#include "ops/view.h"

namespace automodel::models {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* const kTypes[] = {"gemma3", "idefics3", "smolvlm"};

bool supported(const std::string& model_type) {
  return std::find(std::begin(kTypes), std::end(kTypes), model_type) != std::end(kTypes);
}

// A sub-config object (absent or null: every default).
json sub_config(const json& j, const std::string& key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return json::object();
  if (!it->is_object()) config_error(source, key, "must be an object, got " + it->dump());
  return *it;
}

// A token id under transformers 5's name or its older alias (image_token_id / image_token_index).
int64_t token_id(const json& j, const std::string& name, const std::string& alias, int64_t fallback,
                 const std::string& source) {
  const std::string key = j.contains(name) && !j[name].is_null() ? name : alias;
  const int64_t id = json_get<int64_t>(j, key, fallback, source);
  if (id < 0) config_error(source, key, "must be a non-negative token id, got " + std::to_string(id));
  return id;
}

// Where other writers put the tensor transformers 5 saves as `name`: Hub checkpoints of transformers 4
// (vision_tower.vision_model.*), and transformers 5's module names (model.language_model.*, lm_head.*,
// model.vision_tower.*, model.multi_modal_projector.*).
std::vector<std::string> other_names(const std::string& name) {
  auto tail = [&](const std::string& prefix) -> std::optional<std::string> {
    if (name.rfind(prefix, 0) != 0) return std::nullopt;
    return name.substr(prefix.size());
  };
  if (auto rest = tail("language_model.model.")) return {"model.language_model." + *rest};
  if (auto rest = tail("language_model.lm_head.")) return {"lm_head." + *rest};
  if (auto rest = tail("vision_tower."))
    return {"vision_tower.vision_model." + *rest, "model.vision_tower." + *rest,
            "model.vision_tower.vision_model." + *rest};
  if (auto rest = tail("multi_modal_projector.")) return {"model.multi_modal_projector." + *rest};
  return {};
}

}  // namespace

VisionLanguageConfig VisionLanguageConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error("config.json is not a JSON object", source);
  VisionLanguageConfig c;
  c.raw = j;
  c.source = source;
  c.model_type = json_get<std::string>(j, "model_type", "", source);
  if (!supported(c.model_type))
    config_error(source, "model_type", "'" + c.model_type + "' is not an image-text-to-text model this loads",
                 "supported image-text-to-text model types: gemma3, idefics3, smolvlm");
  if (c.model_type != "gemma3") {
    parse_idefics3_config(j, c);
    return c;
  }
  c.tie_word_embeddings = json_get<bool>(j, "tie_word_embeddings", true, source);
  c.dtype = json_get<std::string>(j, "dtype", json_get<std::string>(j, "torch_dtype", "float32", source), source);
  c.mm_tokens_per_image = json_get<int64_t>(j, "mm_tokens_per_image", c.mm_tokens_per_image, source);
  c.image_token_id = token_id(j, "image_token_id", "image_token_index", c.image_token_id, source);
  c.boi_token_id = token_id(j, "boi_token_id", "boi_token_index", c.boi_token_id, source);
  c.eoi_token_id = token_id(j, "eoi_token_id", "eoi_token_index", c.eoi_token_id, source);

  json text = gemma3_text_defaults();
  text.update(sub_config(j, "text_config", source));
  // The LM head is tied (or not) as the top-level config says, as Gemma3ForConditionalGeneration does.
  text["tie_word_embeddings"] = c.tie_word_embeddings;
  c.text = ModelConfig::from_json(text, source + " (text_config)");

  const json vision = sub_config(j, "vision_config", source);
  if (json_get<bool>(vision, "vision_use_head", false, source))
    config_error(source, "vision_config.vision_use_head",
                 "is true: Gemma 3 uses the vision tower's patch features, not SigLIP's pooling head",
                 "set vision_use_head to false (as Gemma 3's checkpoints do)");
  c.vision = SiglipVisionConfig::from_json(vision, "vision_config", source);
  return c;
}

json VisionLanguageConfig::to_json() const {
  json j = raw;
  j["model_type"] = model_type;
  json text_json = text.to_json();
  text_json.erase("dtype");
  j["text_config"] = text_json;
  j["dtype"] = dtype;
  j.erase("torch_dtype");
  return j;
}

std::vector<int64_t> checked_token_ids(const Tensor& input_ids, int64_t vocab, int64_t image_token_id) {
  AM_CHECK(input_ids.dim() == 2 && input_ids.dtype() == DType::i64, "input_ids must be [batch, seq] i64, got ",
           input_ids.describe());
  const int64_t T = input_ids.size(1);
  const std::vector<double> d = input_ids.to_doubles();
  std::vector<int64_t> ids(d.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    ids[i] = int64_t(d[i]);
    if (ids[i] < 0 || (ids[i] >= vocab && ids[i] != image_token_id))
      throw Error("token id " + std::to_string(ids[i]) + " at batch row " + std::to_string(int64_t(i) / T) +
                      ", position " + std::to_string(int64_t(i) % T) + " is outside the vocabulary [0, " +
                      std::to_string(vocab) + ")",
                  "input_ids", "pass ids below text_config.vocab_size (or the image token id)");
  }
  return ids;
}

Tensor VisionLanguageModel::text_embeddings(const Tensor& input_ids, std::vector<int64_t>& ids) const {
  const VisionLanguageConfig& c = vision_language_config();
  const int64_t image_id = c.image_token_id;
  ids = checked_token_ids(input_ids, c.text.vocab_size, image_id);
  std::vector<int64_t> text_ids = ids;
  if (image_id >= c.text.vocab_size)
    for (int64_t& id : text_ids)
      if (id == image_id) id = 0;
  return language_model_->embed(Tensor::from_vector(text_ids, {input_ids.size(0), input_ids.size(1)}));
}

void VisionLanguageModel::set_kernels(const KernelOptions& kernels) {
  kernels_ = kernels;
  for (auto& [name, m] : named_modules()) {
    if (auto* norm = dynamic_cast<nn::RMSNorm*>(m)) norm->fused = kernels.fused;
    if (auto* linear = dynamic_cast<nn::Linear*>(m)) linear->fused = kernels.fused;
  }
  language_model_->set_kernels(kernels);
}

Tensor splice_image_features(const Tensor& embeds, const std::vector<int64_t>& ids, const Tensor& features,
                             int64_t image_id, const std::string& what) {
  const int64_t B = embeds.size(0), T = embeds.size(1);
  const int64_t K = features.defined() ? features.size(0) : 0;
  const int64_t image_tokens = std::count(ids.begin(), ids.end(), image_id);
  if (image_tokens != K)
    throw Error("the batch has " + std::to_string(image_tokens) + " image tokens (id " + std::to_string(image_id) +
                    ") for " + what,
                "input_ids / pixel_values",
                "expand each image to its image tokens (the processor does) and pass one image per expansion");
  if (K == 0) return embeds;
  // masked_scatter: the features, in order, over the image tokens in row-major order.
  const Tensor flat = ops::to_dtype(features, embeds.dtype());
  std::vector<Tensor> rows;
  int64_t used = 0;
  for (int64_t b = 0; b < B; ++b) {
    const Tensor row = ops::narrow(embeds, 0, b, 1);
    std::vector<Tensor> pieces;
    int64_t t = 0;
    while (t < T) {
      const bool image = ids[size_t(b * T + t)] == image_id;
      int64_t end = t;
      while (end < T && (ids[size_t(b * T + end)] == image_id) == image) ++end;
      pieces.push_back(image ? ops::unsqueeze(ops::narrow(flat, 0, used, end - t), 0)
                             : ops::narrow(row, 1, t, end - t));
      if (image) used += end - t;
      t = end;
    }
    rows.push_back(pieces.size() == 1 ? pieces[0] : ops::concat(pieces, 1));
  }
  return rows.size() == 1 ? rows[0] : ops::concat(rows, 0);
}

bool is_vision_language_model_dir(const std::string& model_dir) {
  const fs::path path = fs::path(model_dir) / "config.json";
  if (!fs::exists(path)) return false;
  const json j = read_json(path.string());
  return j.is_object() && j.contains("model_type") && j["model_type"].is_string() &&
         supported(j["model_type"].get<std::string>());
}

std::vector<std::string> supported_vision_language_model_types() { return {std::begin(kTypes), std::end(kTypes)}; }

VisionLanguageConfig load_vision_language_config(const std::string& model_dir) {
  const std::string path = (fs::path(model_dir) / "config.json").string();
  if (!fs::exists(path))
    throw Error("no config.json in " + model_dir, model_dir,
                "point at a directory written by transformers' save_pretrained");
  VisionLanguageConfig config = VisionLanguageConfig::from_json(read_json(path), path);
  const std::string gen = (fs::path(model_dir) / "generation_config.json").string();
  if (fs::exists(gen)) config.generation_config = read_json(gen);
  return config;
}

std::unique_ptr<VisionLanguageModel> load_vision_language_model(const std::string& name_or_path,
                                                                const LoadOptions& options) {
  const std::string dir = io::resolve_model_dir(name_or_path);
  const VisionLanguageConfig config = load_vision_language_config(dir);
  std::unique_ptr<VisionLanguageModel> model;
  {
    nn::SkipInitGuard skip;  // every parameter is overwritten below
    model = config.model_type == "gemma3" ? build_gemma3_vision_language_model(config, options.dtype)
                                          : build_idefics3_vision_language_model(config, options.dtype);
  }
  load_weights(*model, model->state_dict_adapter(), dir, config.model_type, other_names);
  apply_trainable(*model, options);
  return model;
}

namespace {

// One row of token ids with its images, each image's tokens attending to each other (the processor's
// token_type_ids).
DecoderInput prompt_input(const VisionLanguageModel& model, const std::vector<int64_t>& tokens,
                          const Tensor& pixel_values) {
  const int64_t T = int64_t(tokens.size());
  DecoderInput input(Tensor::from_vector(tokens, {1, T}));
  input.pixel_values = pixel_values;
  std::vector<int64_t> types(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) types[i] = tokens[i] == model.vision_language_config().image_token_id;
  input.token_type_ids = Tensor::from_vector(types, {1, T});
  return input;
}

}  // namespace

std::vector<double> sequence_logprobs(const VisionLanguageModel& model, const std::vector<int64_t>& tokens,
                                      const Tensor& pixel_values) {
  if (tokens.size() < 2)
    throw Error("logprobs: need at least 2 tokens, got " + std::to_string(tokens.size()), "logprobs",
                "pass the whole sequence: the first token is the context of the second");
  NoGradGuard no_grad;
  const int64_t n = int64_t(tokens.size());
  const Tensor logits = model.forward(prompt_input(model, tokens, pixel_values));  // [1, n, V]
  Tensor lp = ops::log_softmax(ops::to_dtype(ops::slice(logits, 1, 0, n - 1), DType::f64), -1);
  lp = ops::contiguous(lp);
  const int64_t V = lp.size(-1);
  const double* p = lp.data<double>();
  std::vector<double> out(size_t(n - 1));
  for (int64_t i = 0; i + 1 < n; ++i) {
    out[size_t(i)] = p[i * V + tokens[size_t(i + 1)]];
    if (!std::isfinite(out[size_t(i)]))
      throw Error("the model produced a non-finite log-probability at position " + std::to_string(i + 1), "logprobs",
                  "activations overflow: run in float32, or check the model's weights");
  }
  return out;
}

std::vector<int64_t> generate(const VisionLanguageModel& model, const std::vector<int64_t>& prompt,
                              const Tensor& pixel_values, const GenerationConfig& config) {
  if (prompt.empty())
    throw Error("generate: the prompt is empty", "generate", "pass at least one token id (e.g. the bos token)");
  AM_CHECK(config.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got ", config.max_new_tokens);
  std::vector<int64_t> out;
  if (config.max_new_tokens == 0) return out;
  NoGradGuard no_grad;
  Generator gen(config.seed);
  const int64_t T = int64_t(prompt.size());
  KVCache cache = model.make_cache(1, T + config.max_new_tokens);
  ForwardOptions options;
  options.cache = &cache;
  const DecoderInput input = prompt_input(model, prompt, pixel_values);
  auto last_logits = [&](const Tensor& hidden) {
    const int64_t n = hidden.size(1);
    std::vector<float> logits = model.logits(ops::slice(hidden, 1, n - 1, n)).to_floats();
    for (float x : logits)
      if (!std::isfinite(x))
        throw Error("the model produced a non-finite logit", "generate",
                    "activations overflow: run in float32, or check the model's weights");
    return logits;
  };
  std::vector<float> logits = last_logits(model.forward_hidden(input, options).hidden);
  for (int64_t step = 0;; ++step) {
    const int64_t next = select_next_token(std::move(logits), config, gen);
    out.push_back(next);
    if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), next) != config.eos_token_ids.end()) break;
    if (step + 1 == config.max_new_tokens) break;
    logits = last_logits(model.forward_hidden(Tensor::from_vector(std::vector<int64_t>{next}, {1, 1}), options).hidden);
  }
  return out;
}

}  // namespace automodel::models
