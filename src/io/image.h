#pragma once
// Image files (JPEG, PNG, WebP) decoded to 8-bit RGB exactly as transformers' load_image does with Pillow:
// PIL.Image.open, PIL.ImageOps.exif_transpose (the EXIF Orientation tag of JPEG APP1, PNG eXIf and WebP EXIF, else
// the XMP packet's tiff:Orientation, as Pillow falls back to it), then
// Image.convert("RGB"): alpha is dropped without compositing, greyscale replicated, palettes looked up, CMYK turned
// into RGB with Pillow's formula, 16-bit channels cut to their high byte (16-bit greyscale, Pillow's I;16, clipped to
// 255 instead). Anything that cannot be decoded is an automodel::Error naming the file; no input crashes or exits.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace automodel::io {

struct ImageRGB8 {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> pixels;  // height rows of width RGB triples
};

// Pillow's decompression-bomb guard: it refuses images of more than 2 * Image.MAX_IMAGE_PIXELS pixels
// (2 * 89478485), before decoding them; so does this, with the same default.
inline constexpr int64_t kDefaultMaxImagePixels = 2 * int64_t{89478485};

// Decodes the file at `path`.
ImageRGB8 read_image_file(const std::string& path, int64_t max_pixels = kDefaultMaxImagePixels);
// Decodes an image held in memory; `where` names it in errors (a file name, a dataset record).
ImageRGB8 decode_image(const uint8_t* data, size_t size, const std::string& where,
                       int64_t max_pixels = kDefaultMaxImagePixels);

// The EXIF Orientation (1-8) in a TIFF-structured EXIF block (starting with "II*\0" or "MM\0*", optionally behind
// the "Exif\0\0" of a JPEG APP1 segment); 1 when absent or unreadable, as Pillow reads it.
int exif_orientation(const uint8_t* data, size_t size);
// The image turned upright for an EXIF orientation, as PIL.ImageOps.exif_transpose does (2: mirrored, 3: rotated
// 180 degrees, 4: flipped, 5: transposed, 6: rotated 90 degrees clockwise, 7: transversed, 8: rotated 90 degrees
// counter-clockwise); other values leave it unchanged.
ImageRGB8 apply_exif_orientation(ImageRGB8 image, int orientation);

}  // namespace automodel::io
