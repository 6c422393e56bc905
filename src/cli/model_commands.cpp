// `automodel inspect`, `automodel generate` and `automodel logprobs`: a Hugging Face model
// directory in, its description / continuation / next-token log-probabilities out.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "components/tokenizer/tokenizer.h"
#include "core/error.h"
#include "core/threads.h"
#include "io/hf_dir.h"
#include "models/auto_model.h"
#include "models/generate.h"
#include "models/vision_language_model.h"

namespace automodel::cli {

DType parse_dtype(const std::string& s) {
  if (s == "f32" || s == "float32" || s == "fp32") return DType::f32;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  throw Error("unknown --dtype '" + s + "'", "command line", "use --dtype f32 or --dtype bf16");
}

namespace {

using nlohmann::json;

// "1,2,3" (spaces and surrounding [ ] allowed) -> ids; every element must be a non-negative integer.
std::vector<int64_t> parse_ids(const std::string& text, const std::string& option) {
  std::string s = text;
  auto trim = [](std::string& t) {
    size_t a = t.find_first_not_of(" \t\n"), b = t.find_last_not_of(" \t\n");
    t = a == std::string::npos ? "" : t.substr(a, b - a + 1);
  };
  trim(s);
  if (s.size() >= 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
  std::vector<int64_t> ids;
  std::stringstream ss(s);
  std::string item;
  size_t index = 0;
  const std::string hint = "pass token ids as comma-separated integers, e.g. --" + option + " 1,15043,3186";
  while (std::getline(ss, item, ',')) {
    trim(item);
    bool ok = !item.empty() && item.find_first_not_of("0123456789") == std::string::npos && item.size() <= 18;
    if (!ok)
      throw Error("--" + option + ": element " + std::to_string(index) + " ('" + item +
                      "') is not a non-negative integer token id",
                  "command line", hint);
    ids.push_back(std::stoll(item));
    ++index;
  }
  if (ids.empty()) throw Error("--" + option + " is empty", "command line", hint);
  return ids;
}

// Ids outside the model's vocabulary: a --prompt-ids mistake, or (with `tok`) a tokenizer whose vocabulary is
// larger than the model's.
void check_vocab(const std::vector<int64_t>& ids, int64_t vocab, const std::string& dir,
                 const tokenizer::Tokenizer* tok) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < vocab) continue;
    const std::string range = "[0, " + std::to_string(vocab) + ")";
    if (tok)
      throw Error("the tokenizer encoded --prompt into token id " + std::to_string(ids[i]) + " ('" +
                      tok->id_to_token(ids[i]) + "', token " + std::to_string(i) +
                      "), outside the model's vocabulary of " + std::to_string(vocab) + " tokens (vocab_size)",
                  (std::filesystem::path(dir) / "tokenizer.json").string() + " vs " +
                      (std::filesystem::path(dir) / "config.json").string(),
                  "the tokenizer (" + std::to_string(tok->vocab_size()) +
                      " tokens) does not belong to this model: save the model's own tokenizer beside it");
    throw Error("--prompt-ids: token id " + std::to_string(ids[i]) + " (element " + std::to_string(i) +
                    ") is outside the model's vocabulary of " + std::to_string(vocab) + " tokens",
                dir + "/config.json", "pass ids in " + range);
  }
}

// --model / the inspect argument -> the model directory. A file (config.json, model.safetensors, ...) is named as
// such instead of "not found".
std::string model_dir_of(const std::string& arg, const std::string& command) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(arg, ec)) {
    const std::filesystem::path parent = std::filesystem::path(arg).parent_path();
    throw Error("'" + arg + "' is a file, not a model directory", arg,
                "pass the directory that holds config.json and the weights: `automodel " + command + " " +
                    (command == "inspect" ? "" : "--model ") + (parent.empty() ? "." : parent.string()) + "`");
  }
  return io::resolve_model_dir(arg);
}

std::string require_model(const Args& args, const std::string& command) {
  std::string m = args.str("model", "");
  if (m.empty() || m == "true")
    throw Error("`automodel " + command + "` needs --model DIR", "command line",
                "pass a model directory written by transformers (config.json + *.safetensors) or a hub id in the "
                "local Hugging Face cache");
  return m;
}

void print_json_line(const json& j) { std::printf("%s\n", j.dump().c_str()); }

std::string join_windows(const std::vector<int64_t>& w) {
  bool any = false;
  for (int64_t x : w) any = any || x > 0;
  if (!any) return "none (full attention in every layer)";
  std::string s = "[";
  for (size_t i = 0; i < w.size(); ++i) s += (i ? ", " : "") + (w[i] > 0 ? std::to_string(w[i]) : std::string("full"));
  return s + "]";
}

// Checks `ids` (from --prompt-ids, or from `tok`) against the model's vocab before reading any weights, and
// loads the model frozen for inference.
std::unique_ptr<models::LanguageModel> load_for_inference(const std::string& dir, const std::vector<int64_t>& ids,
                                                          DType dtype, int threads,
                                                          const tokenizer::Tokenizer* tok = nullptr) {
  check_vocab(ids, models::load_config(dir).vocab_size, dir, tok);
  set_num_threads(threads);
  models::LoadOptions options;
  options.dtype = dtype;
  options.trainable = false;
  return models::AutoModelForCausalLM::from_pretrained(dir, options);
}

// Parameters one token uses: all but the experts it is not routed to (grouped expert tensors [E, ...] named
// *.experts.*, of which num_experts_per_tok of num_experts run).
int64_t active_parameters(const nn::Module& model, const models::ModelConfig& c) {
  int64_t active = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    const bool experts =
        c.num_experts > 0 && name.find(".experts.") != std::string::npos && p.dim() == 3 && p.size(0) == c.num_experts;
    active += experts ? p.numel() / c.num_experts * c.num_experts_per_tok : p.numel();
  }
  return active;
}

}  // namespace

int run_inspect(const Args& args) {
  std::string model_arg = args.str("model", "");
  Args rest = args;
  if (model_arg.empty() || model_arg == "true") {
    if (rest.positional.empty())
      throw Error("`automodel inspect` needs a model directory", "command line",
                  "run `automodel inspect DIR` (or --model DIR)");
    model_arg = rest.positional.front();
    rest.positional.erase(rest.positional.begin());
  }
  const bool as_json = rest.flag("json");
  const DType dtype = parse_dtype(rest.str("dtype", "f32"));
  rest.reject_unused("inspect");

  const std::string dir = model_dir_of(model_arg, "inspect");
  models::LoadOptions options;
  options.dtype = dtype;
  // An image-text-to-text model is described by its text decoder's config plus its vision tower.
  std::unique_ptr<models::VisionLanguageModel> vlm;
  std::unique_ptr<models::LanguageModel> lm;
  if (models::is_vision_language_model_dir(dir))
    vlm = models::load_vision_language_model(dir, options);
  else
    lm = models::AutoModelForCausalLM::from_pretrained(dir, options);
  const nn::Module& model = vlm ? static_cast<const nn::Module&>(*vlm) : *lm;
  const models::ModelConfig& c = vlm ? vlm->vision_language_config().text : lm->config();
  const json& raw = vlm ? vlm->vision_language_config().raw : c.raw;
  std::string arch;
  if (raw.contains("architectures") && raw["architectures"].is_array() && !raw["architectures"].empty() &&
      raw["architectures"][0].is_string())
    arch = raw["architectures"][0].get<std::string>();
  const int64_t params = model.num_parameters(), trainable = model.num_parameters(true);
  const int64_t active = active_parameters(model, c);
  const std::string model_type = vlm ? vlm->vision_language_config().model_type : c.model_type;
  const std::string dtype_saved = vlm ? vlm->vision_language_config().dtype : c.dtype;
  const DType dtype_loaded = vlm ? vlm->dtype() : lm->dtype();

  json j;
  j["model_dir"] = dir;
  j["model_type"] = model_type;
  j["architecture"] = arch;
  j["num_parameters"] = params;
  j["num_trainable_parameters"] = trainable;
  j["num_active_parameters"] = active;
  if (c.num_experts > 0) {
    j["num_experts"] = c.num_experts;
    j["num_experts_per_tok"] = c.num_experts_per_tok;
    j["moe_intermediate_size"] = c.moe_intermediate_size;
  }
  j["dtype_saved"] = dtype_saved;
  j["dtype_loaded"] = dtype_name(dtype_loaded);
  if (vlm) {
    const models::SiglipVisionConfig& v = vlm->vision_language_config().vision;
    j["text_model_type"] = c.model_type;
    j["vision"] = {{"num_hidden_layers", v.num_hidden_layers},
                   {"hidden_size", v.hidden_size},
                   {"num_attention_heads", v.num_attention_heads},
                   {"image_size", v.image_size},
                   {"patch_size", v.patch_size},
                   {"mm_tokens_per_image", vlm->vision_language_config().mm_tokens_per_image},
                   {"image_token_id", vlm->vision_language_config().image_token_id}};
    if (vlm->vision_language_config().model_type != "gemma3")
      j["vision"]["scale_factor"] = vlm->vision_language_config().scale_factor;
  }
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["hidden_size"] = c.hidden_size;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["intermediate_size"] = c.intermediate_size;
  j["hidden_act"] = c.hidden_act;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["rope_type"] = c.rope.type;
  j["rope_theta"] = c.rope.theta;
  if (c.rope.type != "default") j["rope_factor"] = c.rope.factor;
  j["sliding_windows"] = c.layer_windows;
  j["max_position_embeddings"] = c.max_position_embeddings;
  if (c.attn_logit_softcapping > 0) j["attn_logit_softcapping"] = c.attn_logit_softcapping;
  if (c.final_logit_softcapping > 0) j["final_logit_softcapping"] = c.final_logit_softcapping;
  j["eos_token_ids"] = c.eos_token_ids;
  if (as_json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  auto line = [](const char* key, const std::string& value) { std::printf("%-24s %s\n", key, value.c_str()); };
  auto num = [](double x) {
    std::ostringstream os;
    os << x;
    return os.str();
  };
  line("model", dir);
  line("model_type", vlm ? model_type + " (text: " + c.model_type + ")" : model_type);
  line("architecture", arch.empty() ? "(not given)" : arch);
  line("parameters", std::to_string(params) + " (trainable " + std::to_string(trainable) +
                         (active != params ? ", active per token " + std::to_string(active) : std::string()) + ")");
  line("dtype", dtype_saved + " as saved, " + dtype_name(dtype_loaded) + " as loaded");
  if (vlm) {
    const models::SiglipVisionConfig& v = vlm->vision_language_config().vision;
    line("vision tower", "siglip, " + std::to_string(v.num_hidden_layers) + " layers, hidden " +
                             std::to_string(v.hidden_size) + ", " + std::to_string(v.image_size) + "px images in " +
                             std::to_string(v.patch_size) + "px patches, " +
                             std::to_string(vlm->vision_language_config().mm_tokens_per_image) +
                             (vlm->vision_language_config().model_type == "gemma3"
                                  ? " tokens per image"
                                  : " tokens per tile (pixel shuffle " +
                                        std::to_string(vlm->vision_language_config().scale_factor) + ")"));
  }
  line("layers", std::to_string(c.num_hidden_layers));
  line("hidden_size", std::to_string(c.hidden_size));
  line("attention heads", std::to_string(c.num_attention_heads) + " (kv heads " +
                              std::to_string(c.num_key_value_heads) + ", head dim " + std::to_string(c.head_dim) + ")");
  line("vocab_size", std::to_string(c.vocab_size));
  line("intermediate_size", std::to_string(c.intermediate_size) + " (" + c.hidden_act + ")");
  if (c.num_experts > 0)
    line("experts", std::to_string(c.num_experts) + " (top " + std::to_string(c.num_experts_per_tok) +
                        ", moe_intermediate_size " + std::to_string(c.moe_intermediate_size) + ")");
  line("tie_word_embeddings", c.tie_word_embeddings ? "true" : "false");
  line("rope", c.rope.type + ", theta " + num(c.rope.theta) +
                   (c.rope.type != "default" ? ", factor " + num(c.rope.factor) : std::string()));
  line("sliding windows", join_windows(c.layer_windows));
  if (c.attn_logit_softcapping > 0 || c.final_logit_softcapping > 0)
    line("logit soft-capping",
         "attention " + num(c.attn_logit_softcapping) + ", final " + num(c.final_logit_softcapping));
  line("max positions", std::to_string(c.max_position_embeddings));
  return 0;
}

int run_generate(const Args& args) {
  const std::string model_arg = require_model(args, "generate");
  if (args.options.count("messages")) return run_image_text(args, "generate", model_dir_of(model_arg, "generate"));
  const std::string prompt_ids = args.str("prompt-ids", "");
  const bool has_text = args.options.count("prompt") > 0;
  const std::string text = args.str("prompt", "");
  const int64_t max_new = args.integer("max-new-tokens", 32);
  const bool has_t = args.options.count("temperature"), has_k = args.options.count("top-k"),
             has_p = args.options.count("top-p");
  const double temperature = args.number("temperature", 1.0);
  const int64_t top_k = args.integer("top-k", 0);
  const double top_p = args.number("top-p", 1.0);
  const uint64_t seed = uint64_t(args.integer("seed", 0));
  const DType dtype = parse_dtype(args.str("dtype", "f32"));
  const int threads = args.threads();
  args.reject_unused("generate");

  if (has_text && !prompt_ids.empty())
    throw Error("--prompt and --prompt-ids both given", "command line", "pass only one of them");
  if (!has_text && (prompt_ids.empty() || prompt_ids == "true"))
    throw Error("`automodel generate` needs a prompt", "command line", "pass --prompt TEXT or --prompt-ids 1,2,3");
  if (max_new < 0) throw Error("--max-new-tokens must be >= 0, got " + std::to_string(max_new), "command line");
  if (has_t && !(temperature > 0))
    throw Error("--temperature must be > 0, got " + std::to_string(temperature), "command line",
                "leave out --temperature, --top-k and --top-p for greedy decoding");
  if (has_k && top_k < 0) throw Error("--top-k must be >= 0 (0 = off), got " + std::to_string(top_k), "command line");
  if (has_p && !(top_p > 0 && top_p <= 1))
    throw Error("--top-p must be in (0, 1], got " + std::to_string(top_p), "command line");
  // A text prompt goes through the model's own tokenizer.json, and the answer comes back as text.
  const std::string dir = model_dir_of(model_arg, "generate");
  std::optional<tokenizer::Tokenizer> tok;
  if (has_text) {
    if (!std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json"))
      throw Error("no tokenizer.json in " + dir + " to encode --prompt", "automodel generate --prompt",
                  "save the tokenizer beside the model, or pass token ids with --prompt-ids");
    tok = tokenizer::Tokenizer::from_pretrained(dir);
  }
  std::vector<int64_t> prompt = tok ? tok->encode(text).ids : parse_ids(prompt_ids, "prompt-ids");

  std::unique_ptr<models::LanguageModel> model = load_for_inference(dir, prompt, dtype, threads, tok ? &*tok : nullptr);

  // Greedy unless a sampling option is given; the options left out are then off.
  models::GenerationConfig gen;
  gen.eos_token_ids = models::read_generation_config(dir, model->config()).eos_token_ids;
  gen.max_new_tokens = max_new;
  gen.do_sample = has_t || has_k || has_p;
  gen.temperature = temperature;
  gen.top_k = top_k;
  gen.top_p = top_p;
  gen.seed = seed;
  std::vector<int64_t> out = models::generate(*model, prompt, gen);
  if (tok)
    std::printf("%s\n", tok->decode(out, /*skip_special_tokens=*/true).c_str());
  else
    print_json_line(json(out));
  return 0;
}

int run_logprobs(const Args& args) {
  const std::string model_arg = require_model(args, "logprobs");
  if (args.options.count("messages")) return run_image_text(args, "logprobs", model_dir_of(model_arg, "logprobs"));
  const std::string prompt_ids = args.str("prompt-ids", "");
  const DType dtype = parse_dtype(args.str("dtype", "f32"));
  const int threads = args.threads();
  args.reject_unused("logprobs");
  if (prompt_ids.empty() || prompt_ids == "true")
    throw Error("`automodel logprobs` needs --prompt-ids", "command line",
                "pass the whole sequence, e.g. --prompt-ids 1,2,3,4 (at least 2 ids)");
  std::vector<int64_t> tokens = parse_ids(prompt_ids, "prompt-ids");
  if (tokens.size() < 2)
    throw Error("--prompt-ids needs at least 2 ids to score (the first is only context)", "command line",
                "pass the whole sequence, e.g. --prompt-ids 1,2,3,4");

  std::unique_ptr<models::LanguageModel> model =
      load_for_inference(model_dir_of(model_arg, "logprobs"), tokens, dtype, threads);
  // sequence_logprobs refuses non-finite logits (an error, not a NaN here), and log-probabilities of finite logits
  // (in f64) are finite: the output is always strict JSON, with no NaN / Infinity tokens.
  std::vector<double> lp = models::sequence_logprobs(*model, tokens);
  std::string out = "{\"tokens\": " + json(tokens).dump() + ", \"logprobs\": [";
  for (size_t i = 0; i < lp.size(); ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", lp[i]);
    out += (i ? ", " : "") + std::string(buf);
  }
  std::printf("%s]}\n", out.c_str());
  return 0;
}

}  // namespace automodel::cli
