#pragma once
// Minimal .npy read/write for the oracle runner (little-endian, C order).
#include <string>

#include "core/tensor.h"

namespace automodel::oracle {

// Reads an .npy file; uint16 arrays become bf16 or f16 tensors when `as` says so.
Tensor read_npy(const std::string& path, const std::string& as = "");
// Writes t as .npy; bf16/f16 are widened to float32 (exactly).
void write_npy(const std::string& path, const Tensor& t);

}  // namespace automodel::oracle
