#pragma once
// The Gemma 3 processor as transformers' slow (PIL) Gemma3ImageProcessor + Gemma3Processor run it (and Idefics 3 /
// SmolVLM's, idefics3_image_processor.h): images to
// pixel_values (pan-and-scan crops, resize with Pillow's filters, rescale, normalise) and the settings the text side
// needs (image_seq_length, the image tokens).
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "components/processor/resample.h"
#include "io/image.h"

namespace automodel::processor {

// Gemma 3's pan-and-scan: a wide (tall) image is also cut into 2..max_num_crops side-by-side (stacked) crops, each
// processed as an image of its own after the whole image.
struct PanAndScan {
  bool enabled = false;
  int64_t min_crop_size = 256;
  int64_t max_num_crops = 4;
  double min_ratio_to_activate = 1.2;
};

// Idefics 3 / SmolVLM's image splitting: the longest edge resized to longest_edge, both edges rounded up to multiples
// of max_image_size, cut into max_image_size tiles, then the whole image resized to one more tile (the global image).
struct ImageSplitting {
  bool idefics3 = false;  // the processor is Idefics3ImageProcessor / SmolVLMImageProcessor
  bool enabled = true;    // do_image_splitting (off: every image becomes one max_image_size tile)
  int64_t longest_edge = 4 * 364, max_image_size = 364;
};

struct ImageProcessorConfig {
  std::string image_processor_type;
  ImageSplitting splitting;  // Idefics 3 / SmolVLM (then height and width are unused)
  bool do_resize = true, do_rescale = true, do_normalize = true;
  int64_t height = 224, width = 224;
  Resample resample = Resample::kBilinear;
  double rescale_factor = 1.0 / 255;
  std::array<double, 3> image_mean{0.5, 0.5, 0.5}, image_std{0.5, 0.5, 0.5};
  PanAndScan pan_and_scan;
};

struct ProcessorConfig {
  ImageProcessorConfig image;
  std::string processor_class;
  int64_t image_seq_length = 256;
  // The tokenizer's image tokens (tokenizer_config.json's boi_token, eoi_token, image_token).
  std::string boi_token = "<start_of_image>", eoi_token = "<end_of_image>", image_token = "<image_soft_token>";
  // Idefics 3 / SmolVLM (Idefics3Processor, SmolVLMProcessor): image_token is the placeholder too ("<image>"), and
  // boi_token and eoi_token are both fake_image_token. image_seq_length is the processor's image_seq_len.
  std::string global_image_token = "<global-img>";
};

// The text that stands for one image in a prompt: Gemma 3's boi_token, Idefics 3's image_token.
const std::string& image_placeholder(const ProcessorConfig& config);

// Reads a model directory's processor settings as AutoProcessor does: processor_config.json (image_seq_length, and in
// transformers 5's layout the image processor under "image_processor"), else preprocessor_config.json for the image
// processor; null or absent keys take the class defaults. Pan-and-scan takes Gemma3Processor's defaults (off, 256, 4,
// 1.2) whatever the image processor's file says, as transformers' processor passes its own defaults over them; set
// `pan_and_scan` afterwards to turn it on (as processor(..., do_pan_and_scan=True) does). Errors name the file and key.
ProcessorConfig load_processor_config(const std::string& model_dir);
// The image processor settings of one JSON object (a preprocessor_config.json); `where` names it in errors.
ImageProcessorConfig parse_image_processor_config(const nlohmann::json& config, const std::string& where);

// The crops pan-and-scan cuts from `image` (none when the image is not elongated enough or the crops would be
// smaller than min_crop_size), as Gemma3ImageProcessor.pan_and_scan.
std::vector<io::ImageRGB8> pan_and_scan_crops(const io::ImageRGB8& image, const PanAndScan& settings);

struct PixelValues {
  std::vector<float> values;  // [count, 3, height, width]
  int64_t count = 0, height = 0, width = 0;
  std::vector<int64_t> num_crops;  // per input image: how many crops follow it in `values`
  // Idefics 3 / SmolVLM, per input image: its tile rows and columns (0 x 0: the image is one tile, no global image).
  std::vector<int64_t> rows, cols;
};

// The processor's pixel_values for these images (already RGB): each image, then its pan-and-scan crops, resized,
// rescaled and normalised with transformers' float arithmetic (rescale in double, rounded to float; normalise in
// float), so the values are bit-identical to the slow image processor's.
PixelValues preprocess_images(const std::vector<io::ImageRGB8>& images, const ImageProcessorConfig& config);

}  // namespace automodel::processor
