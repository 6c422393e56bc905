// `automodel generate` and `automodel logprobs` on an image-text model: a conversation whose image parts name files
// (--messages CHAT.json), rendered and tokenized with the model directory's chat template and processor as
// processor.apply_chat_template(messages, tokenize=True) does, then the model on its tokens and images.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli/commands.h"
#include "components/tokenizer/chat_template.h"
#include "core/error.h"
#include "core/threads.h"
#include "models/generate.h"
#include "models/vision_language_model.h"
#include "recipes/vlm_inputs.h"

namespace automodel::cli {

nlohmann::ordered_json read_messages_file(const std::string& path, const std::string& where) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path, where + " --messages", "give a JSON file of chat messages");
  std::ostringstream ss;
  ss << in.rdbuf();
  nlohmann::ordered_json messages;
  try {
    messages = nlohmann::ordered_json::parse(ss.str());
  } catch (const nlohmann::ordered_json::exception& e) {
    throw Error(std::string("invalid JSON: ") + e.what(), path, "give a JSON file of chat messages");
  }
  if (messages.is_object() && messages.contains("messages")) messages = messages["messages"];
  return messages;
}

int run_image_text(const Args& args, const std::string& command, const std::string& dir) {
  const std::string where = "automodel " + command;
  const std::string messages_path = args.str("messages", "");
  const bool generating = command == "generate";
  const int64_t max_new = generating ? args.integer("max-new-tokens", 32) : 0;
  const DType dtype = parse_dtype(args.str("dtype", "f32"));
  const int threads = args.threads();
  args.reject_unused(command);
  if (messages_path.empty() || messages_path == "true")
    throw Error("--messages needs a file", "command line",
                "pass a conversation whose image parts name files, e.g. [{\"role\": \"user\", \"content\": [{\"type\": "
                "\"image\", \"image\": \"cat.png\"}, {\"type\": \"text\", \"text\": \"What is this?\"}]}]");
  if (!models::is_vision_language_model_dir(dir))
    throw Error("--messages is for image-text models; " + dir + " holds a causal LM", "command line",
                "pass --prompt TEXT or --prompt-ids IDS");
  if (max_new < 0) throw Error("--max-new-tokens must be >= 0, got " + std::to_string(max_new), "command line");

  // The prompt to continue ends with the generation prompt; a sequence to score is the conversation as it is.
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_pretrained(dir);
  const recipes::VlmInputs inputs = recipes::apply_chat_template_with_images(
      tok, tokenizer::load_chat_templates(dir), processor::load_processor_config(dir),
      read_messages_file(messages_path, where), /*add_generation_prompt=*/generating, "", messages_path);
  const recipes::VlmInputs& in = inputs;
  Tensor pixels;
  if (in.pixels.count > 0)
    pixels = Tensor::from_vector(in.pixels.values, {in.pixels.count, 3, in.pixels.height, in.pixels.width});

  set_num_threads(threads);
  models::LoadOptions options;
  options.dtype = dtype;
  options.trainable = false;
  const std::unique_ptr<models::VisionLanguageModel> model = models::load_vision_language_model(dir, options);
  nlohmann::ordered_json out;
  if (generating) {
    models::GenerationConfig gen;
    gen.eos_token_ids = models::read_generation_config(dir, model->config()).eos_token_ids;
    gen.max_new_tokens = max_new;
    const std::vector<int64_t> ids = models::generate(*model, in.input_ids, pixels, gen);
    out["ids"] = ids;
    out["text"] = tok.decode(ids, /*skip_special_tokens=*/true);
  } else {
    // Finite logits give finite log-probabilities (sequence_logprobs refuses others): strict JSON.
    out["tokens"] = in.input_ids;
    out["logprobs"] = models::sequence_logprobs(*model, in.input_ids, pixels);
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace automodel::cli
