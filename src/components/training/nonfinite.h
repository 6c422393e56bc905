#pragma once
// Non-finite values in training: a step whose loss or gradient norm is NaN or infinite either stops the run or is
// skipped (step_scheduler.h), and weights that are not finite never go into a checkpoint; this finds them.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace automodel::training {

struct NonFiniteValue {
  std::string tensor;  // its name
  int64_t index = 0;   // flat element index
  double value = 0;    // NaN or +-infinity
};

// The first NaN or infinite element of the tensors, in order; nullopt when every element is finite. Floating-point
// tensors are read by their exponent bits (no arithmetic, the same verdict for every dtype); others are skipped.
std::optional<NonFiniteValue> find_nonfinite(const std::vector<std::pair<std::string, Tensor>>& tensors);

// "nan", "inf" or "-inf" (and the number itself when finite).
std::string number_text(double value);

}  // namespace automodel::training
