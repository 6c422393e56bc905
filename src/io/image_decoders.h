#pragma once
// The three decoders behind io/image.h, each a file of its own around one library. Each returns 8-bit RGB as
// Pillow's convert("RGB") gives it for the mode Pillow would open the file in, and the file's EXIF block (empty when
// it has none); orientation is applied by the caller.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "io/image.h"

namespace automodel::io::detail {

struct DecodedImage {
  ImageRGB8 rgb;
  std::vector<uint8_t> exif;
};

DecodedImage decode_jpeg(const uint8_t* data, size_t size, const std::string& where, int64_t max_pixels);
DecodedImage decode_png(const uint8_t* data, size_t size, const std::string& where, int64_t max_pixels);
DecodedImage decode_webp(const uint8_t* data, size_t size, const std::string& where, int64_t max_pixels);

// Throws the decompression-bomb Error (or the one for an empty image) before any pixel is decoded.
void check_image_size(int64_t width, int64_t height, int64_t max_pixels, const std::string& where);

}  // namespace automodel::io::detail
