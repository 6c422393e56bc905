#pragma once
// Integer rounding every layer uses for tiles, blocks and alignment.
#include <cstdint>

namespace automodel {

// n rounded up to a multiple of m (m > 0, n >= 0).
constexpr int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

}  // namespace automodel
