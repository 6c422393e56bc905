#pragma once
// torchao.optim.AdamW8bit's update (components/optim/adamw8bit.h): AdamW in fp32 on a tile of parameters, with
// exp_avg / exp_avg_sq either fp32 (dense) or 8-bit codes with one fp32 scale per block (quant8.h), dequantized as
// read and quantized again after the update. bf16 parameters without a master may be updated through fp32 and
// stochastically rounded back (master_split.h). Compiled with -fno-math-errno -ffp-contract=off, as optim.h.
#include <cstdint>

#include "core/dtype.h"
#include "kernels/shapes.h"

namespace automodel::cpu {

// n elements with fp32 moments m, v: p (p_dt f32 or bf16) and g (g_dt: p_dt, or bf16 under an f32 master).
// rounds: p is bf16 and the fp32 result is stochastically rounded with (key, first), p being element `first`.
void adamw8bit_dense(DType p_dt, DType g_dt, const kernels::Adam8Step& s, void* p, const void* g, float* m, float* v,
                     int64_t n, bool rounds, uint32_t key, int64_t first);
// n elements (whole blocks of block_size) with 8-bit moments: codes_m / codes_v one byte an element, scales_m /
// scales_v one fp32 scale a block, updated in place.
void adamw8bit_blocks(DType p_dt, DType g_dt, const kernels::Adam8Step& s, void* p, const void* g, uint8_t* codes_m,
                      uint8_t* codes_v, float* scales_m, float* scales_v, int64_t n, int64_t block_size, bool rounds,
                      uint32_t key, int64_t first);

}  // namespace automodel::cpu
