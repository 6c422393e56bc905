#pragma once
// Image.resize of Pillow for 8-bit RGB images, pixel for pixel: its convolution filters (box, bilinear, Hamming,
// bicubic, Lanczos), widened by the scale factor when downscaling (antialiasing), applied as two one-axis passes in
// Pillow 13's order, with coefficients in its 22-bit fixed point and its rounding and clipping.
#include <cstdint>
#include <string>

#include "io/image.h"

namespace automodel::processor {

// PIL.Image.Resampling's numbers, as image processor configs store them ("resample": 2).
enum class Resample : int { kNearest = 0, kLanczos = 1, kBilinear = 2, kBicubic = 3, kBox = 4, kHamming = 5 };

// The filter for a config's "resample" number; an Error naming `where` for nearest (Pillow resizes with it through
// its affine transform, which this does not reproduce) and for numbers Pillow does not know.
Resample resample_from_pil(int64_t value, const std::string& where);
const char* resample_name(Resample filter);

// Pillow's image.resize((width, height), filter) of the whole image; the same size returns a copy.
io::ImageRGB8 resize_like_pil(const io::ImageRGB8& image, int64_t width, int64_t height, Resample filter);

}  // namespace automodel::processor
