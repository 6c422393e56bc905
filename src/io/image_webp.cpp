// WebP through libwebp's animation decoder, the API Pillow uses for every WebP: a still image (lossy, lossless, with
// or without alpha) is the first and only frame; of an animation, the first frame is the image, as Pillow opens it.
// Alpha is dropped without compositing.
#include <webp/decode.h>
#include <webp/demux.h>

#include <cstring>
#include <memory>

#include "core/error.h"
#include "io/image_decoders.h"

namespace automodel::io::detail {
namespace {

const char* status_text(VP8StatusCode status) {
  switch (status) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt bitstream";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "the file ends early (truncated)";
    default: return "unknown error";
  }
}

struct AnimDecoderDeleter {
  void operator()(WebPAnimDecoder* decoder) const { WebPAnimDecoderDelete(decoder); }
};

}  // namespace

DecodedImage decode_webp(const uint8_t* data, size_t size, const std::string& where, int64_t max_pixels) {
  WebPBitstreamFeatures features;
  VP8StatusCode status = WebPGetFeatures(data, size, &features);
  if (status != VP8_STATUS_OK)
    throw Error(std::string("cannot decode the WebP: ") + status_text(status), where, "is the file damaged?");
  check_image_size(features.width, features.height, max_pixels, where);

  WebPAnimDecoderOptions options;
  if (!WebPAnimDecoderOptionsInit(&options)) throw Error("cannot start libwebp (version mismatch)", where);
  options.color_mode = MODE_RGBA;
  options.use_threads = 0;
  WebPData webp_data{data, size};
  std::unique_ptr<WebPAnimDecoder, AnimDecoderDeleter> decoder(WebPAnimDecoderNew(&webp_data, &options));
  if (!decoder) throw Error("cannot decode the WebP: its container is damaged", where, "is the file complete?");
  WebPAnimInfo info;
  if (!WebPAnimDecoderGetInfo(decoder.get(), &info)) throw Error("cannot read the WebP's header", where);
  check_image_size(info.canvas_width, info.canvas_height, max_pixels, where);
  uint8_t* rgba = nullptr;
  int timestamp = 0;
  if (!WebPAnimDecoderGetNext(decoder.get(), &rgba, &timestamp) || !rgba)
    throw Error("cannot decode the WebP: its image data is damaged or truncated", where, "is the file complete?");

  DecodedImage out;
  out.rgb.width = info.canvas_width;
  out.rgb.height = info.canvas_height;
  const size_t n = size_t(out.rgb.width * out.rgb.height);
  out.rgb.pixels.resize(n * 3);
  for (size_t i = 0; i < n; ++i) std::memcpy(&out.rgb.pixels[3 * i], rgba + 4 * i, 3);

  const WebPDemuxer* demux = WebPAnimDecoderGetDemuxer(decoder.get());
  WebPChunkIterator chunk;
  if (demux && WebPDemuxGetChunk(demux, "EXIF", 1, &chunk)) {
    out.exif.assign(chunk.chunk.bytes, chunk.chunk.bytes + chunk.chunk.size);
    WebPDemuxReleaseChunkIterator(&chunk);
  }
  if (demux && WebPDemuxGetChunk(demux, "XMP ", 1, &chunk)) {
    out.xmp.assign(reinterpret_cast<const char*>(chunk.chunk.bytes), chunk.chunk.size);
    WebPDemuxReleaseChunkIterator(&chunk);
  }
  return out;
}

}  // namespace automodel::io::detail
