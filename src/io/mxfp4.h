#pragma once
// MXFP4 (OCP microscaling FP4), as GPT-OSS checkpoints store their experts (quantization_config quant_method
// "mxfp4"): `<name>_blocks` uint8 [..., G, 16] holds 32 FP4 (E2M1) values per block, two per byte (the low nibble is
// the even element, the high nibble the odd one), and `<name>_scales` uint8 [..., G] one power-of-two exponent per
// block, biased by 127. Element 2j of a block is FP4(low nibble of byte j) * 2^(scale - 127), element 2j + 1 that of
// the high nibble; FP4 codes 0..7 are +0, 0.5, 1, 1.5, 2, 3, 4, 6 and 8..15 their negatives (transformers'
// FP4_VALUES and _convert_moe_packed_tensors, which dequantizes with Mxfp4Config(dequantize=True)).
#include <string>

#include "core/tensor.h"

namespace automodel::io {

// blocks (integer [..., G, 16], values 0..255) and scales (integer [..., G], values 0..255) -> [..., G * 32] in
// `dtype` (floating), the blocks' values in order. Shapes that do not pair, or values outside a byte, are an Error
// naming `what` (the tensor's name and file).
Tensor dequantize_mxfp4(const Tensor& blocks, const Tensor& scales, DType dtype, const std::string& what);

}  // namespace automodel::io
