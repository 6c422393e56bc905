// JPEG through libjpeg-turbo, decoded as Pillow decodes it: the library's defaults (accurate integer IDCT, fancy
// upsampling), greyscale as L, three components as RGB, four as Adobe-inverted CMYK.
//
// libjpeg reports a fatal error through error_exit, whose default calls exit(); ours longjmps back to the one
// function below that called setjmp. That function holds only plain data, and only libjpeg's C frames lie between
// it and the longjmp, so no destructor is skipped.
#include <csetjmp>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "io/image_decoders.h"
// jpeglib.h uses size_t and FILE without declaring them: it comes after <cstdio>.
#include <jerror.h>
#include <jpeglib.h>

namespace automodel::io::detail {
namespace {

struct JpegErrors {
  jpeg_error_mgr manager;  // first, so libjpeg's pointer to it is a pointer to this
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;
};

[[noreturn]] void on_error(j_common_ptr cinfo) {
  auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
  cinfo->err->format_message(cinfo, errors->message);
  std::longjmp(errors->jump, 1);
}

// Warnings (corrupt data libjpeg can skip) pass silently, as in Pillow; running out of data does not: Pillow raises
// "image file is truncated" where libjpeg would fill the rest with grey.
void on_message(j_common_ptr cinfo, int level) {
  auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) errors->truncated = true;
}

constexpr char kXmpPrefix[] = "http://ns.adobe.com/xap/1.0/";  // and its terminating NUL

struct JpegHeader {
  int64_t width, height;
  int components;
};

// Everything that can longjmp. `allocate` sizes the output once the header is known (and may throw Error).
// Returns false with errors.message set on a libjpeg error.
bool run_libjpeg(jpeg_decompress_struct* cinfo, JpegErrors* errors, const uint8_t* data, size_t size,
                 std::vector<uint8_t>* exif, std::string* xmp, void (*allocate)(void*, const JpegHeader&),
                 void* context, std::vector<uint8_t>* raw) {
  if (setjmp(errors->jump)) return false;
  jpeg_mem_src(cinfo, data, static_cast<unsigned long>(size));
  jpeg_save_markers(cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(cinfo, TRUE);
  // The first EXIF and the first XMP APP1 segments, as Pillow keeps them.
  for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
    if (m->marker != JPEG_APP0 + 1) continue;
    if (exif->empty() && m->data_length >= 6 && std::memcmp(m->data, "Exif\0\0", 6) == 0)
      exif->assign(m->data, m->data + m->data_length);
    if (xmp->empty() && m->data_length >= sizeof kXmpPrefix && std::memcmp(m->data, kXmpPrefix, sizeof kXmpPrefix) == 0)
      xmp->assign(reinterpret_cast<const char*>(m->data) + sizeof kXmpPrefix, m->data_length - sizeof kXmpPrefix);
  }
  switch (cinfo->num_components) {
    case 1: cinfo->out_color_space = JCS_GRAYSCALE; break;
    case 3: cinfo->out_color_space = JCS_RGB; break;
    case 4: cinfo->out_color_space = JCS_CMYK; break;
    default: break;  // refused by the caller's allocate
  }
  allocate(context, JpegHeader{cinfo->image_width, cinfo->image_height, cinfo->num_components});
  jpeg_start_decompress(cinfo);
  const size_t stride = size_t{cinfo->output_width} * cinfo->output_components;
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW row = raw->data() + size_t{cinfo->output_scanline} * stride;
    jpeg_read_scanlines(cinfo, &row, 1);
  }
  jpeg_finish_decompress(cinfo);
  return true;
}

struct AllocateContext {
  const std::string* where;
  int64_t max_pixels;
  std::vector<uint8_t>* raw;
  JpegHeader header;
};

void allocate(void* opaque, const JpegHeader& header) {
  auto* context = static_cast<AllocateContext*>(opaque);
  if (header.components != 1 && header.components != 3 && header.components != 4)
    throw Error("unsupported JPEG: " + std::to_string(header.components) + " colour components", *context->where,
                "Pillow reads JPEGs of 1, 3 or 4 components only");
  check_image_size(header.width, header.height, context->max_pixels, *context->where);
  context->raw->resize(size_t(header.width * header.height * header.components));
  context->header = header;
}

// Pillow's CMYK -> RGB (Convert.c cmyk2rgb): each channel is (255 - K) - C * (255 - K) / 255, rounded its way.
uint8_t cmyk_channel(int c, int nk) {
  int t = c * nk + 128;
  int v = nk - (((t >> 8) + t) >> 8);
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

}  // namespace

DecodedImage decode_jpeg(const uint8_t* data, size_t size, const std::string& where, int64_t max_pixels) {
  jpeg_decompress_struct cinfo{};
  JpegErrors errors{};
  cinfo.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = on_error;
  errors.manager.emit_message = on_message;
  jpeg_create_decompress(&cinfo);
  std::vector<uint8_t> raw;
  DecodedImage out;
  AllocateContext context{&where, max_pixels, &raw, {}};
  bool ok;
  try {
    ok = run_libjpeg(&cinfo, &errors, data, size, &out.exif, &out.xmp, allocate, &context, &raw);
  } catch (...) {
    jpeg_destroy_decompress(&cinfo);
    throw;
  }
  jpeg_destroy_decompress(&cinfo);
  if (!ok) throw Error(std::string("cannot decode the JPEG: ") + errors.message, where, "is the file damaged?");
  if (errors.truncated)
    throw Error("the JPEG is truncated (its data ends before the image does)", where, "is the file complete?");

  const JpegHeader& h = context.header;
  out.rgb.width = h.width;
  out.rgb.height = h.height;
  const size_t n = size_t(h.width * h.height);
  if (h.components == 3) {
    out.rgb.pixels = std::move(raw);
    return out;
  }
  out.rgb.pixels.resize(n * 3);
  uint8_t* dst = out.rgb.pixels.data();
  if (h.components == 1) {
    for (size_t i = 0; i < n; ++i) dst[3 * i] = dst[3 * i + 1] = dst[3 * i + 2] = raw[i];
    return out;
  }
  // Pillow reads four components as Adobe's inverted CMYK ("CMYK;I"), whatever the file's markers say.
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* cmyk = &raw[4 * i];
    int nk = cmyk[3];  // 255 - (255 - stored K)
    for (int c = 0; c < 3; ++c) dst[3 * i + c] = cmyk_channel(255 - cmyk[c], nk);
  }
  return out;
}

}  // namespace automodel::io::detail
