#include "io/image.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "io/image_decoders.h"

namespace automodel::io {
namespace {

bool starts_with(const uint8_t* data, size_t size, const char* magic, size_t n) {
  return size >= n && std::memcmp(data, magic, n) == 0;
}

// Names the formats Pillow opens but this decoder does not, so the message says what the file is.
std::string other_format(const uint8_t* data, size_t size) {
  if (starts_with(data, size, "GIF87a", 6) || starts_with(data, size, "GIF89a", 6)) return "a GIF";
  if (starts_with(data, size, "BM", 2)) return "a BMP";
  if (starts_with(data, size, "II*\0", 4) || starts_with(data, size, "MM\0*", 4)) return "a TIFF";
  if (size >= 12 && std::memcmp(data + 4, "ftyp", 4) == 0) return "an HEIF/AVIF";
  return "";
}

uint32_t read_u16(const uint8_t* p, bool big_endian) {
  return big_endian ? (uint32_t{p[0]} << 8 | p[1]) : (uint32_t{p[1]} << 8 | p[0]);
}
uint32_t read_u32(const uint8_t* p, bool big_endian) {
  return big_endian ? (read_u16(p, true) << 16 | read_u16(p + 2, true))
                    : (read_u16(p + 2, false) << 16 | read_u16(p, false));
}

}  // namespace

void detail::check_image_size(int64_t width, int64_t height, int64_t max_pixels, const std::string& where) {
  if (width <= 0 || height <= 0)
    throw Error("the image has no pixels (" + std::to_string(width) + "x" + std::to_string(height) + ")", where);
  if (width > max_pixels / height)
    throw Error("the image is " + std::to_string(width) + "x" + std::to_string(height) + " = " +
                    std::to_string(width * height) + " pixels, more than the limit of " + std::to_string(max_pixels) +
                    " (a decompression bomb?)",
                where, "Pillow refuses the same image (Image.MAX_IMAGE_PIXELS); shrink it first");
}

int detail::exif_orientation_tag(const uint8_t* data, size_t size) {
  if (starts_with(data, size, "Exif\0\0", 6)) data += 6, size -= 6;
  if (size < 8) return 0;
  bool big_endian;
  if (std::memcmp(data, "II*\0", 4) == 0)
    big_endian = false;
  else if (std::memcmp(data, "MM\0*", 4) == 0)
    big_endian = true;
  else
    return 0;
  uint32_t ifd = read_u32(data + 4, big_endian);
  if (ifd > size || size - ifd < 2) return 0;
  uint32_t entries = read_u16(data + ifd, big_endian);
  for (uint32_t i = 0; i < entries; ++i) {
    size_t at = size_t{ifd} + 2 + size_t{i} * 12;
    if (at + 12 > size) return 0;
    const uint8_t* entry = data + at;
    if (read_u16(entry, big_endian) != 0x0112) continue;
    uint32_t type = read_u16(entry + 2, big_endian);
    uint32_t value = type == 3   ? read_u16(entry + 8, big_endian)
                     : type == 4 ? read_u32(entry + 8, big_endian)
                     : type == 1 ? entry[8]
                                 : 1;
    return value >= 1 && value <= 8 ? static_cast<int>(value) : 1;  // present but meaningless: left as it is
  }
  return 0;
}

int exif_orientation(const uint8_t* data, size_t size) {
  int tag = detail::exif_orientation_tag(data, size);
  return tag ? tag : 1;
}

int detail::xmp_orientation(std::string_view xmp) {
  // Pillow's getexif falls back to the first match of r'tiff:Orientation(="|>)([0-9])' in the XMP packet.
  constexpr std::string_view key = "tiff:Orientation";
  for (size_t at = xmp.find(key); at != std::string_view::npos; at = xmp.find(key, at + 1)) {
    size_t v = at + key.size();
    if (xmp.substr(v, 2) == "=\"")
      v += 2;
    else if (xmp.substr(v, 1) == ">")
      v += 1;
    else
      continue;
    if (v < xmp.size() && xmp[v] >= '0' && xmp[v] <= '9') return xmp[v] - '0';
  }
  return 0;
}

ImageRGB8 apply_exif_orientation(ImageRGB8 image, int orientation) {
  if (orientation < 2 || orientation > 8) return image;
  const int64_t w = image.width, h = image.height;
  const bool swaps = orientation >= 5;
  ImageRGB8 out;
  out.width = swaps ? h : w;
  out.height = swaps ? w : h;
  out.pixels.resize(image.pixels.size());
  for (int64_t y = 0; y < out.height; ++y) {
    for (int64_t x = 0; x < out.width; ++x) {
      int64_t sx = 0, sy = 0;  // the source pixel shown at (x, y)
      switch (orientation) {
        case 2: sx = w - 1 - x, sy = y; break;
        case 3: sx = w - 1 - x, sy = h - 1 - y; break;
        case 4: sx = x, sy = h - 1 - y; break;
        case 5: sx = y, sy = x; break;
        case 6: sx = y, sy = h - 1 - x; break;
        case 7: sx = w - 1 - y, sy = h - 1 - x; break;
        case 8: sx = w - 1 - y, sy = x; break;
      }
      std::memcpy(&out.pixels[(y * out.width + x) * 3], &image.pixels[(sy * w + sx) * 3], 3);
    }
  }
  return out;
}

ImageRGB8 decode_image(const uint8_t* data, size_t size, const std::string& where, int64_t max_pixels) {
  if (size == 0) throw Error("the image file is empty", where);
  detail::DecodedImage decoded;
  if (starts_with(data, size, "\xFF\xD8\xFF", 3)) {
    decoded = detail::decode_jpeg(data, size, where, max_pixels);
  } else if (starts_with(data, size, "\x89PNG\r\n\x1A\n", 8)) {
    decoded = detail::decode_png(data, size, where, max_pixels);
  } else if (size >= 12 && std::memcmp(data, "RIFF", 4) == 0 && std::memcmp(data + 8, "WEBP", 4) == 0) {
    decoded = detail::decode_webp(data, size, where, max_pixels);
  } else {
    std::string other = other_format(data, size);
    throw Error(other.empty() ? "not an image file (neither JPEG, PNG nor WebP)"
                              : "unsupported image format: " + other + " file",
                where, "convert it to JPEG, PNG or WebP");
  }
  // As PIL.ImageOps.exif_transpose: the EXIF Orientation, else (no such tag) the XMP packet's tiff:Orientation.
  int orientation = detail::exif_orientation_tag(decoded.exif.data(), decoded.exif.size());
  if (orientation == 0) orientation = detail::xmp_orientation(decoded.xmp);
  return apply_exif_orientation(std::move(decoded.rgb), orientation);
}

ImageRGB8 read_image_file(const std::string& path, int64_t max_pixels) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error("is a directory, not an image file", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open the image file", path, "check the path");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error("cannot read the image file", path);
  return decode_image(bytes.data(), bytes.size(), path, max_pixels);
}

}  // namespace automodel::io
