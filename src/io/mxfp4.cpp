#include "io/mxfp4.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/threads.h"
#include "io/safetensors.h"

namespace automodel::io {

namespace {

constexpr float kFp4Values[16] = {+0.0f, +0.5f, +1.0f, +1.5f, +2.0f, +3.0f, +4.0f, +6.0f,
                                  -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
constexpr int64_t kBlockBytes = 16;

// The tensor's values as bytes (an Error naming `what` for a value outside 0..255).
std::vector<uint8_t> bytes_of(const Tensor& t, const std::string& what, const char* part) {
  if (is_floating(t.dtype()))
    throw Error("MXFP4 " + std::string(part) + " of " + what + " must be stored as integers (uint8), got " +
                    dtype_name(t.dtype()),
                what, "the checkpoint is not an MXFP4 checkpoint as transformers writes it");
  const Tensor c = convert_dtype(t, DType::i32, what);  // contiguous
  const int32_t* p = c.data<int32_t>();
  std::vector<uint8_t> out(size_t(c.numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    if (p[i] < 0 || p[i] > 255)
      throw Error("MXFP4 " + std::string(part) + " of " + what + " holds " + std::to_string(p[i]) + " at element " +
                      std::to_string(i) + ", outside a byte",
                  what, "the checkpoint is corrupt; re-download it");
    out[i] = uint8_t(p[i]);
  }
  return out;
}

}  // namespace

Tensor dequantize_mxfp4(const Tensor& blocks, const Tensor& scales, DType dtype, const std::string& what) {
  AM_CHECK(is_floating(dtype), "dequantize_mxfp4: target dtype ", dtype_name(dtype), " is not floating");
  const Shape& bs = blocks.shape();
  if (bs.size() < 2 || bs.back() != kBlockBytes || Shape(bs.begin(), bs.end() - 1) != scales.shape())
    throw Error("MXFP4 blocks " + shape_str(bs) + " and scales " + shape_str(scales.shape()) + " of " + what +
                    " do not pair: blocks must be [..., G, 16] and scales [..., G]",
                what, "the checkpoint is not an MXFP4 checkpoint as transformers writes it");
  const std::vector<uint8_t> block_bytes = bytes_of(blocks, what, "blocks"),
                             scale_bytes = bytes_of(scales, what, "scales");
  const int64_t nblocks = scales.numel();
  std::vector<float> values(size_t(nblocks * 2 * kBlockBytes));
  parallel_for(nblocks, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const int exponent = int(scale_bytes[size_t(g)]) - 127;
      const uint8_t* in = block_bytes.data() + g * kBlockBytes;
      float* out = values.data() + g * 2 * kBlockBytes;
      for (int64_t j = 0; j < kBlockBytes; ++j) {
        out[2 * j] = std::ldexp(kFp4Values[in[j] & 0x0F], exponent);
        out[2 * j + 1] = std::ldexp(kFp4Values[in[j] >> 4], exponent);
      }
    }
  });
  Shape shape(bs.begin(), bs.end() - 1);
  shape.back() *= 2 * kBlockBytes;
  return convert_dtype(Tensor::from_vector(values, shape), dtype, what);
}

}  // namespace automodel::io
