#pragma once
// x / d for many x and one d, rounded as the division rounds it, without the divider (a division costs as much as
// a dozen fused multiply-adds there, and the optimizers divide by one scale per block or step).
#include <cmath>

namespace automodel::cpu {

// Markstein's correction: q = x r, then q + (x - q d) r, each step one rounding. With r = 1 / d rounded to nearest
// this is x / d rounded to nearest whenever d and r are normal, x / d is finite and the remainder x - q d is a
// normal number (in fp32, |x| >= 2^-100 is enough); an infinite x / d is returned as x r.
template <class T>
inline T div_by_reciprocal(T x, T d, T r) {
  const T q = x * r;
  const T exact = std::fma(std::fma(-q, d, x), r, q);
  return std::isinf(q) ? q : exact;
}

}  // namespace automodel::cpu
