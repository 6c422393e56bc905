#pragma once
// Element type conversion over contiguous buffers. Floating targets round to nearest even; f64 to
// bf16 / f16 goes through f32 (as torch does). NaN stays NaN (quiet), overflow goes to inf.
// Integer targets truncate toward zero, saturating, NaN -> 0; b8 targets are (x != 0).
#include <cstdint>

#include "core/dtype.h"

namespace automodel::cpu {

// dst[i] = convert(src[i]) for i in [0, n); src and dst must not overlap.
void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n);

// The hot pairs, vectorised with AVX-512 (F16C for f16) when the build targets it.
void cast(const float* src, bf16* dst, int64_t n);
void cast(const bf16* src, float* dst, int64_t n);
void cast(const float* src, f16* dst, int64_t n);
void cast(const f16* src, float* dst, int64_t n);

}  // namespace automodel::cpu
