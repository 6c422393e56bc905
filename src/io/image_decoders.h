#pragma once
// The three decoders behind io/image.h, each a file of its own around one library. Each returns 8-bit RGB as
// Pillow's convert("RGB") gives it for the mode Pillow would open the file in, and the file's EXIF block and XMP
// packet (empty when it has none); orientation is applied by the caller.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "io/image.h"

namespace automodel::io::detail {

struct DecodedImage {
  ImageRGB8 rgb;
  std::vector<uint8_t> exif;
  std::string xmp;  // the XMP packet (JPEG APP1, PNG iTXt "XML:com.adobe.xmp", WebP "XMP "), empty when none
};

// The EXIF block's Orientation: 1-8; 1 for a tag outside that range; 0 when there is no tag (then Pillow reads the
// XMP packet's).
int exif_orientation_tag(const uint8_t* data, size_t size);
// tiff:Orientation in an XMP packet (the first single digit Pillow's pattern finds); 0 when absent.
int xmp_orientation(std::string_view xmp);

DecodedImage decode_jpeg(const uint8_t* data, size_t size, const std::string& where, int64_t max_pixels);
DecodedImage decode_png(const uint8_t* data, size_t size, const std::string& where, int64_t max_pixels);
DecodedImage decode_webp(const uint8_t* data, size_t size, const std::string& where, int64_t max_pixels);

// Throws the decompression-bomb Error (or the one for an empty image) before any pixel is decoded.
void check_image_size(int64_t width, int64_t height, int64_t max_pixels, const std::string& where);

}  // namespace automodel::io::detail
