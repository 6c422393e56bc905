#pragma once
// 8-bit optimizer state as torchao.optim.AdamW8bit stores it (after bitsandbytes and arXiv:2110.02861): a tensor
// is cut into blocks of block_size elements; each block keeps one fp32 scale (its absolute maximum, at least
// 1e-12) and one byte per element, the index of the nearest value of x / scale in a 256-entry "dynamic tree" map
// (signed for exp_avg, unsigned for exp_avg_sq). The maps are built as torchao's create_dynamic_map builds them,
// in the same fp32 arithmetic, so they are the same floats bit for bit; quantize_reference() returns the code
// torchao's quantize_8bit_with_qmap returns for every float, quantize_unit() the same for |x| <= 1.
#include <cstdint>
#include <vector>

namespace automodel::cpu::q8 {

class QuantMap {
 public:
  explicit QuantMap(bool is_signed);

  const float* values() const { return values_; }  // 256 ascending floats
  // torchao's rule: the largest code c with values[c] <= x (0 below them all), then c + 1 when
  // x - values[c] >= (values[c + 1] - values[c]) * 0.5 in fp32. Straight from the definition (a binary search);
  // the reference for quantize_unit().
  uint8_t quantize_reference(float x) const;
  // The same code for |x| <= 1 (what a block quantizer meets: x / absmax), from a table over the float's high 16
  // bits: within one such bucket the code takes at most two values (checked when the table is built), split at a
  // low-half threshold. The table spans only the exponents from 1 down to where every smaller float (of each
  // sign) takes one code, ~25 KB, so that it stays in L1. One 32-bit entry per bucket (so that a vector loop
  // gathers it): the code at low half 0 in bits 0-7, the code from the split on in bits 8-15, the split in bits
  // 16-31 (a bucket of one code has both codes equal).
  uint8_t quantize_unit(float x) const {
    uint8_t code;
    quantize_unit(&x, 1.0f, 1, &code);
    return code;
  }
  // codes[i] = quantize_unit(x[i] / scale) for a scale in [2^-126, 2^125] with |x[i]| <= scale, as one vector
  // loop dividing by the reciprocal (div_by_reciprocal.h).
  void quantize_unit(const float* x, float scale, int64_t n, uint8_t* codes) const;
  float dequantize(uint8_t code, float scale) const { return values_[code] * scale; }

 private:
  uint32_t bucket(uint32_t high_half) const;  // the table entry for floats with this high half

  float values_[256];
  int exponent_floor_ = 0;         // row 0 holds every float whose exponent field is <= this one
  uint32_t rows_ = 0;              // exponent rows per sign
  std::vector<uint32_t> buckets_;  // [sign][row][7 high mantissa bits]
};

const QuantMap& signed_map();    // exp_avg
const QuantMap& unsigned_map();  // exp_avg_sq

// One block: scale = max(max |x|, 1e-12) (NaN when x holds a NaN, as torch's amax), codes of x / scale (by the
// table when the scale is finite and at most 2^125, so that |x / scale| <= 1; by the definition otherwise).
// Returns the scale.
float quantize_block(const QuantMap& map, const float* x, int64_t n, uint8_t* codes);
// Its two halves, for a caller that has the block's max |x| (amax) and whether it holds a NaN at hand.
float block_scale(float amax, bool nan);
void quantize_scaled(const QuantMap& map, const float* x, int64_t n, float scale, uint8_t* codes);
// x = values[code] * scale.
void dequantize_block(const QuantMap& map, const uint8_t* codes, float scale, int64_t n, float* x);

}  // namespace automodel::cpu::q8
