#include "core/rng.h"

#include <cmath>

namespace automodel {

Generator& default_generator() {
  static Generator gen(0);
  return gen;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

// Fills values[0..n) from blocks first, first+1, ...; each block yields four values.
template <class F>
static std::vector<double> draw(int64_t n, Generator& gen, F&& from_block) {
  std::vector<double> values(static_cast<size_t>(n));
  int64_t blocks = (n + 3) / 4;
  uint64_t first = gen.reserve(uint64_t(blocks));
  uint64_t seed = gen.seed();
#pragma omp parallel for schedule(static) if (blocks > 4096)
  for (int64_t b = 0; b < blocks; ++b) {
    std::array<double, 4> v = from_block(philox4x32(seed, first + uint64_t(b)));
    for (int64_t j = 0; j < 4 && 4 * b + j < n; ++j) values[size_t(4 * b + j)] = v[size_t(j)];
  }
  return values;
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype) {
  auto values = draw(shape_numel(shape), gen, [](std::array<uint32_t, 4> r) {
    std::array<double, 4> out;
    for (int k = 0; k < 2; ++k) {                              // Box-Muller on two pairs
      double u1 = (double(r[2 * k] >> 8) + 1.0) / 16777217.0;  // (0, 1]
      double u2 = double(uint32_to_unit_float(r[2 * k + 1]));
      double rad = std::sqrt(-2.0 * std::log(u1));
      out[2 * k] = rad * std::cos(2.0 * M_PI * u2);
      out[2 * k + 1] = rad * std::sin(2.0 * M_PI * u2);
    }
    return out;
  });
  return Tensor::from_values(values, shape, dtype);
}

Tensor rand_uniform(const Shape& shape, double lo, double hi, Generator& gen, DType dtype) {
  auto values = draw(shape_numel(shape), gen, [&](std::array<uint32_t, 4> r) {
    std::array<double, 4> out;
    for (int k = 0; k < 4; ++k) out[k] = lo + (hi - lo) * double(uint32_to_unit_float(r[k]));
    return out;
  });
  return Tensor::from_values(values, shape, dtype);
}

}  // namespace automodel
