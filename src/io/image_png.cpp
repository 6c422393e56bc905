// PNG through libpng, converted to RGB as Pillow's convert("RGB") converts the mode Pillow opens each PNG type in:
// greyscale (1/2/4/8-bit, scaled to 0-255) replicated; 16-bit greyscale (Pillow's I;16) clipped to 255; 16-bit
// colour cut to its high byte; alpha and tRNS transparency dropped; palettes looked up. Gamma, colour profiles and
// the background colour are ignored, as Pillow ignores them.
//
// libpng reports a fatal error through its error callback, which must not return; ours longjmps back to the one
// function below that called setjmp, holding only plain data, with only libpng's C frames in between.
#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "io/image_decoders.h"

namespace automodel::io::detail {
namespace {

struct PngInput {
  const uint8_t* data;
  size_t size, offset;
  char message[256];
  bool image_read;  // the pixels are complete: a damaged chunk after them only loses that chunk
};

void on_error(png_structp png, png_const_charp message) {
  auto* input = static_cast<PngInput*>(png_get_error_ptr(png));
  std::snprintf(input->message, sizeof input->message, "%s", message);
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}

void on_read(png_structp png, png_bytep out, size_t n) {
  auto* input = static_cast<PngInput*>(png_get_io_ptr(png));
  if (input->size - input->offset < n) png_error(png, "the file ends before the PNG does (truncated)");
  std::memcpy(out, input->data + input->offset, n);
  input->offset += n;
}

struct PngHeader {
  int64_t width, height;
  int color_type, bit_depth;
  size_t row_bytes;
};

struct PngTarget {
  const std::string* where;
  int64_t max_pixels;
  PngHeader header;
  std::vector<uint8_t> raw;
  std::vector<png_bytep> rows;
};

void allocate(PngTarget* target, const PngHeader& header) {
  check_image_size(header.width, header.height, target->max_pixels, *target->where);
  target->header = header;
  target->raw.resize(header.row_bytes * size_t(header.height));
  target->rows.resize(size_t(header.height));
  for (int64_t y = 0; y < header.height; ++y) target->rows[y] = target->raw.data() + size_t(y) * header.row_bytes;
}

// Everything that can longjmp; false on a libpng error (the message is in `input`).
bool run_libpng(png_structp png, png_infop info, PngInput* input, PngTarget* target) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_read_fn(png, input, on_read);
  // Pillow rejects a chunk whose CRC is wrong; libpng's default skips a damaged ancillary chunk.
  png_set_crc_action(png, PNG_CRC_DEFAULT, PNG_CRC_ERROR_QUIT);
  png_read_info(png, info);
  const int bit_depth = png_get_bit_depth(png, info);  // before png_set_packing widens 1/2/4 to 8
  png_set_packing(png);                                // 1/2/4-bit samples one per byte, unscaled
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  allocate(target, PngHeader{png_get_image_width(png, info), png_get_image_height(png, info),
                             png_get_color_type(png, info), bit_depth, png_get_rowbytes(png, info)});
  png_read_image(png, target->rows.data());
  input->image_read = true;
  png_read_end(png, info);
  return true;
}

uint8_t scale_grey(unsigned v, int bit_depth) {
  switch (bit_depth) {
    case 1: return static_cast<uint8_t>(v * 255);
    case 2: return static_cast<uint8_t>(v * 85);
    case 4: return static_cast<uint8_t>(v * 17);
    default: return static_cast<uint8_t>(v);
  }
}

}  // namespace

DecodedImage decode_png(const uint8_t* data, size_t size, const std::string& where, int64_t max_pixels) {
  PngInput input{data, size, 0, {}, false};
  PngTarget target{&where, max_pixels, {}, {}, {}};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &input, on_error, on_warning);
  if (!png) throw Error("cannot start libpng", where);
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw Error("cannot start libpng", where);
  }
  bool ok;
  DecodedImage out;
  try {
    ok = run_libpng(png, info, &input, &target);
    png_colorp palette = nullptr;
    int palette_size = 0;
    if (input.image_read && target.header.color_type == PNG_COLOR_TYPE_PALETTE &&
        png_get_PLTE(png, info, &palette, &palette_size)) {
      // Indices past the palette's end show black, as in Pillow (its palette is zero-padded to 256 colours).
      std::vector<uint8_t> lut(256 * 3, 0);
      for (int i = 0; i < palette_size && i < 256; ++i) {
        lut[3 * i] = palette[i].red, lut[3 * i + 1] = palette[i].green, lut[3 * i + 2] = palette[i].blue;
      }
      const size_t n = size_t(target.header.width * target.header.height);
      out.rgb.pixels.resize(n * 3);
      for (size_t y = 0; y < size_t(target.header.height); ++y) {
        const uint8_t* row = target.rows[y];
        uint8_t* dst = out.rgb.pixels.data() + y * size_t(target.header.width) * 3;
        for (int64_t x = 0; x < target.header.width; ++x) std::memcpy(dst + 3 * x, &lut[3 * row[x]], 3);
      }
    }
    png_bytep exif = nullptr;
    png_uint_32 exif_size = 0;
    if (input.image_read && png_get_eXIf_1(png, info, &exif_size, &exif) && exif)
      out.exif.assign(exif, exif + exif_size);
    png_textp texts = nullptr;
    int text_count = 0;
    if (input.image_read && png_get_text(png, info, &texts, &text_count)) {
      for (int i = 0; i < text_count && out.xmp.empty(); ++i) {
        if (std::strcmp(texts[i].key, "XML:com.adobe.xmp") != 0 || !texts[i].text) continue;
        out.xmp.assign(texts[i].text,
                       texts[i].compression >= PNG_ITXT_COMPRESSION_NONE ? texts[i].itxt_length : texts[i].text_length);
      }
    }
  } catch (...) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw;
  }
  png_destroy_read_struct(&png, &info, nullptr);
  if (!ok && !input.image_read)
    throw Error(std::string("cannot decode the PNG: ") + input.message, where, "is the file damaged?");

  const PngHeader& h = target.header;
  out.rgb.width = h.width;
  out.rgb.height = h.height;
  if (h.color_type == PNG_COLOR_TYPE_PALETTE) return out;
  out.rgb.pixels.resize(size_t(h.width * h.height) * 3);
  const bool wide = h.bit_depth == 16;
  const int channels = h.color_type == PNG_COLOR_TYPE_GRAY         ? 1
                       : h.color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                       : h.color_type == PNG_COLOR_TYPE_RGB        ? 3
                                                                   : 4;
  const size_t sample_bytes = wide ? 2 : 1;
  for (int64_t y = 0; y < h.height; ++y) {
    const uint8_t* row = target.rows[y];
    uint8_t* dst = out.rgb.pixels.data() + size_t(y * h.width) * 3;
    for (int64_t x = 0; x < h.width; ++x, dst += 3) {
      const uint8_t* px = row + size_t(x) * channels * sample_bytes;  // 16-bit samples are big-endian
      if (channels <= 2) {
        // Pillow opens 16-bit greyscale as I;16 and converts it to RGB by clipping at 255; greyscale with alpha
        // (LA) keeps the high byte.
        uint8_t v = !wide ? scale_grey(px[0], h.bit_depth) : channels == 1 ? (px[0] ? 255 : px[1]) : px[0];
        dst[0] = dst[1] = dst[2] = v;
      } else {
        for (int c = 0; c < 3; ++c) dst[c] = px[c * sample_bytes];
      }
    }
  }
  return out;
}

}  // namespace automodel::io::detail
