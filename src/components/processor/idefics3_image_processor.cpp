#include "components/processor/idefics3_image_processor.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace automodel::processor {
namespace {

// The image processor's absolute limit on either edge after the first resize (MAX_IMAGE_SIZE).
constexpr int64_t kMaxImageSize = 4096;

// Python's math.ceil(a / b) * b on ints, through a float division as transformers computes it.
int64_t round_up(int64_t value, int64_t multiple) {
  return int64_t(std::ceil(double(value) / double(multiple))) * multiple;
}

io::ImageRGB8 crop(const io::ImageRGB8& image, int64_t y0, int64_t x0, int64_t height, int64_t width) {
  io::ImageRGB8 out;
  out.width = width;
  out.height = height;
  out.pixels.resize(size_t(width * height * 3));
  for (int64_t y = 0; y < height; ++y)
    std::copy_n(image.pixels.data() + size_t(((y0 + y) * image.width + x0) * 3), size_t(width * 3),
                out.pixels.data() + size_t(y * width * 3));
  return out;
}

size_t count_of(const std::string& text, const std::string& token) {
  size_t n = 0;
  for (size_t at = text.find(token); at != std::string::npos; at = text.find(token, at + token.size())) ++n;
  return n;
}

}  // namespace

std::pair<int64_t, int64_t> idefics3_resized_size(int64_t height, int64_t width, int64_t longest_edge) {
  // _resize_output_size_rescale_to_max_len: the longest edge to longest_edge, the other rounded up to an even size.
  double aspect = double(width) / double(height);
  if (width >= height) {
    width = longest_edge;
    height = int64_t(double(width) / aspect);
    if (height % 2 != 0) ++height;
  } else {
    height = longest_edge;
    width = int64_t(double(height) * aspect);
    if (width % 2 != 0) ++width;
  }
  height = std::max<int64_t>(height, 1), width = std::max<int64_t>(width, 1);
  // _resize_output_size_scale_below_upper_bound.
  aspect = double(width) / double(height);
  if (width >= height && width > kMaxImageSize) {
    width = kMaxImageSize;
    height = int64_t(double(width) / aspect);
  } else if (height > width && height > kMaxImageSize) {
    height = kMaxImageSize;
    width = int64_t(double(height) * aspect);
  }
  return {std::max<int64_t>(height, 1), std::max<int64_t>(width, 1)};
}

std::vector<io::ImageRGB8> idefics3_tiles(const io::ImageRGB8& source, const ImageProcessorConfig& config,
                                          int64_t& rows, int64_t& cols) {
  const ImageSplitting& s = config.splitting;
  const int64_t tile = s.max_image_size;
  rows = cols = 0;
  io::ImageRGB8 image = source;
  if (config.do_resize) {
    const auto [height, width] = idefics3_resized_size(image.height, image.width, s.longest_edge);
    image = resize_like_pil(image, width, height, config.resample);
  }
  if (!s.enabled) return {resize_like_pil(image, tile, tile, config.resample)};
  // resize_for_vision_encoder: both edges up to multiples of the tile, the short one through the aspect ratio.
  int64_t height = image.height, width = image.width;
  const double aspect = double(width) / double(height);
  if (width >= height) {
    width = round_up(width, tile);
    height = round_up(int64_t(double(width) / aspect), tile);
  } else {
    height = round_up(height, tile);
    width = round_up(int64_t(double(height) * aspect), tile);
  }
  image = resize_like_pil(image, width, height, config.resample);
  if (height <= tile && width <= tile) return {image};
  rows = (height - tile) / tile + 1;
  cols = (width - tile) / tile + 1;
  std::vector<io::ImageRGB8> tiles;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) tiles.push_back(crop(image, r * tile, c * tile, tile, tile));
  tiles.push_back(resize_like_pil(image, tile, tile, config.resample));  // the global image
  return tiles;
}

std::string idefics3_image_prompt(int64_t rows, int64_t cols, const ProcessorConfig& config) {
  std::string tokens;
  for (int64_t i = 0; i < config.image_seq_length; ++i) tokens += config.image_token;
  const std::string& fake = config.boi_token;
  const std::string global = fake + config.global_image_token + tokens + fake;
  if (rows == 0 && cols == 0) return global;
  std::string out;
  for (int64_t r = 1; r <= rows; ++r) {
    for (int64_t c = 1; c <= cols; ++c)
      out += fake + "<row_" + std::to_string(r) + "_col_" + std::to_string(c) + ">" + tokens;
    out += "\n";
  }
  return out + "\n" + global;
}

std::string expand_idefics3_placeholders(const std::string& text, const PixelValues& pixels,
                                         const ProcessorConfig& config, const std::string& where) {
  const std::string& placeholder = config.image_token;
  AM_CHECK(!placeholder.empty(), "the processor's image_token is empty");
  const size_t placeholders = count_of(text, placeholder);
  if (placeholders != pixels.rows.size())
    throw Error("the text has " + std::to_string(placeholders) + " image placeholders (" + placeholder + ") but " +
                    std::to_string(pixels.rows.size()) + " images were given",
                where, "give one image part per image");
  std::string out;
  size_t last = 0, image = 0;
  for (size_t at = text.find(placeholder); at != std::string::npos; at = text.find(placeholder, last), ++image) {
    out.append(text, last, at - last);
    out += idefics3_image_prompt(pixels.rows[image], pixels.cols[image], config);
    last = at + placeholder.size();
  }
  out.append(text, last, std::string::npos);
  return out;
}

}  // namespace automodel::processor
