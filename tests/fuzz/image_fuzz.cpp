// io/image.cpp: the bytes as an image file of any format (JPEG through libjpeg-turbo, PNG through libpng, WebP through
// libwebp; EXIF orientation), decoded under a small pixel limit so that huge declared sizes are refused, not
// allocated. Every answer but an automodel::Error (a crash, a libjpeg exit(), a longjmp gone wrong) is a finding.
#include "fuzz_util.h"
#include "io/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace automodel;
  fuzz::accept_errors([&] {
    io::ImageRGB8 image = io::decode_image(data, size, "fuzz input", int64_t{1} << 22);
    if (image.pixels.size() != size_t(image.width * image.height * 3)) __builtin_trap();
  });
  const int orientation = io::exif_orientation(data, size);
  if (orientation < 1 || orientation > 8) __builtin_trap();
  return 0;
}
