// `automodel preprocess`: what a vision-language model's processor makes of text and images (input_ids,
// token_type_ids, pixel_values), for users checking their data and for the oracle tests.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cli/commands.h"
#include "components/processor/image_processor.h"
#include "components/tokenizer/chat_template.h"
#include "components/tokenizer/tokenizer.h"
#include "core/error.h"
#include "io/hf_dir.h"
#include "recipes/vlm_inputs.h"

namespace automodel::cli {
namespace {

constexpr const char* kWhere = "automodel preprocess";

// pixel_values as a NumPy .npy file (float32, C order).
void write_npy(const std::string& path, const processor::PixelValues& pixels) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(pixels.count) + ", 3, " +
                       std::to_string(pixels.height) + ", " + std::to_string(pixels.width) + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');  // magic + version + length + header + '\n' to 64 bytes
  header += '\n';
  io::write_file_atomic(path, [&](const io::ByteSink& sink) {
    const uint16_t length = static_cast<uint16_t>(header.size());
    sink("\x93NUMPY\x01\x00", 8);
    const uint8_t le[2] = {uint8_t(length & 0xFF), uint8_t(length >> 8)};
    sink(le, 2);
    sink(header.data(), header.size());
    sink(pixels.values.data(), pixels.values.size() * sizeof(float));
  });
}

// FNV-1a over the float bits: a short fingerprint of pixel_values for quick comparisons.
uint64_t fingerprint(const std::vector<float>& values) {
  uint64_t h = 1469598103934665603ull;
  for (float v : values) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    for (int i = 0; i < 4; ++i) h = (h ^ ((bits >> (8 * i)) & 0xFF)) * 1099511628211ull;
  }
  return h;
}

}  // namespace

int run_preprocess(const Args& args) {
  const std::string model = args.str("model", "");
  const std::string messages_path = args.str("messages", "");
  const bool has_text = args.options.count("text") > 0;
  const std::string text = args.str("text", "");
  const bool add_generation_prompt = args.flag("add-generation-prompt");
  const bool no_special = args.flag("no-special");
  const std::string out_path = args.str("out", "");
  processor::PanAndScan pan_and_scan;
  pan_and_scan.enabled = args.flag("do-pan-and-scan");
  pan_and_scan.min_crop_size = args.integer("pan-and-scan-min-crop-size", pan_and_scan.min_crop_size);
  pan_and_scan.max_num_crops = args.integer("pan-and-scan-max-num-crops", pan_and_scan.max_num_crops);
  pan_and_scan.min_ratio_to_activate =
      args.number("pan-and-scan-min-ratio-to-activate", pan_and_scan.min_ratio_to_activate);
  // The image files are the positional arguments (before any bare flag, which would take the next word as its value).
  const std::vector<std::string> image_files = args.positional;
  Args options_only = args;
  options_only.positional.clear();
  options_only.reject_unused("preprocess");
  const char* usage =
      "usage: automodel preprocess [IMAGE...] --model DIR (--messages CHAT.json [--add-generation-prompt] | [--text "
      "T]) "
      "[--do-pan-and-scan] [--out PIXELS.npy]";
  if (model.empty()) throw Error("--model DIR is required", kWhere, usage);
  if (!messages_path.empty() && (has_text || !image_files.empty()))
    throw Error("give either --messages or --text with image files, not both", kWhere, usage);
  if (pan_and_scan.min_crop_size < 1 || pan_and_scan.max_num_crops < 1)
    throw Error("--pan-and-scan-min-crop-size and --pan-and-scan-max-num-crops must be at least 1", kWhere);

  const std::string dir = io::resolve_model_dir(model);
  processor::ProcessorConfig config = processor::load_processor_config(dir);
  config.image.pan_and_scan = pan_and_scan;
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_pretrained(dir);
  recipes::VlmInputs inputs;
  if (!messages_path.empty()) {
    const auto templates = tokenizer::load_chat_templates(dir);
    inputs = recipes::apply_chat_template_with_images(tok, templates, config, read_messages_file(messages_path, kWhere),
                                                      add_generation_prompt, "", messages_path);
  } else {
    std::vector<io::ImageRGB8> images;
    for (const std::string& file : image_files) images.push_back(io::read_image_file(file));
    // processor(images=...) without text: one placeholder per image, space-separated (Gemma3Processor).
    std::string prompt = text;
    if (!has_text)
      for (size_t i = 0; i < images.size(); ++i) prompt += (i ? " " : "") + processor::image_placeholder(config);
    inputs = recipes::process_text_and_images(tok, config, prompt, images, !no_special, kWhere);
  }
  if (!out_path.empty()) write_npy(out_path, inputs.pixels);

  nlohmann::ordered_json j;
  j["input_ids"] = inputs.input_ids;
  j["token_type_ids"] = inputs.token_type_ids;
  j["pixel_values_shape"] = {inputs.pixels.count, 3, inputs.pixels.height, inputs.pixels.width};
  j["num_crops"] = inputs.pixels.num_crops;
  if (config.image.splitting.idefics3) j["rows"] = inputs.pixels.rows, j["cols"] = inputs.pixels.cols;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fingerprint(inputs.pixels.values)));
  j["pixel_values_fnv1a"] = hex;
  std::string s = j.dump() + "\n";
  std::fwrite(s.data(), 1, s.size(), stdout);
  return 0;
}

}  // namespace automodel::cli
