#include "components/training/nonfinite.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <sstream>

#include "core/error.h"
#include "core/threads.h"

namespace automodel::training {

namespace {

constexpr int64_t kGrain = 1 << 16;

// Whether any of the n values (raw bits U) has every exponent bit set: infinity or NaN.
template <class U>
bool any_exponent_all_ones(const U* bits, int64_t n, U exponent) {
  bool any = false;
#pragma omp simd reduction(| : any)
  for (int64_t i = 0; i < n; ++i) any |= (bits[i] & exponent) == exponent;
  return any;
}

template <class U>
std::optional<int64_t> first_nonfinite(const U* bits, int64_t n, U exponent) {
  std::atomic<bool> found{false};
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    if (any_exponent_all_ones(bits + b, e - b, exponent)) found = true;
  });
  if (!found) return std::nullopt;
  for (int64_t i = 0; i < n; ++i)
    if ((bits[i] & exponent) == exponent) return i;
  return std::nullopt;
}

double value_at(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::f32: return t.data<float>()[i];
    case DType::f64: return t.data<double>()[i];
    case DType::bf16: return bf16_to_float(t.data<bf16>()[i]);
    case DType::f16: return f16_to_float(t.data<f16>()[i]);
    default: return 0.0;
  }
}

}  // namespace

std::optional<NonFiniteValue> find_nonfinite(const std::vector<std::pair<std::string, Tensor>>& tensors) {
  for (const auto& [name, t] : tensors) {
    if (!t.defined() || !is_floating(t.dtype())) continue;
    AM_CHECK(t.is_contiguous(), "find_nonfinite: tensor '", name, "' (", t.describe(), ") must be contiguous");
    const int64_t n = t.numel();
    std::optional<int64_t> at;
    switch (t.dtype()) {
      case DType::f32: at = first_nonfinite(static_cast<const uint32_t*>(t.raw_data()), n, 0x7f800000u); break;
      case DType::f64:
        at = first_nonfinite(static_cast<const uint64_t*>(t.raw_data()), n, uint64_t(0x7ff0000000000000ull));
        break;
      case DType::bf16: at = first_nonfinite(static_cast<const uint16_t*>(t.raw_data()), n, uint16_t(0x7f80)); break;
      case DType::f16: at = first_nonfinite(static_cast<const uint16_t*>(t.raw_data()), n, uint16_t(0x7c00)); break;
      default: break;
    }
    if (at) return NonFiniteValue{name, *at, value_at(t, *at)};
  }
  return std::nullopt;
}

std::string number_text(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  std::ostringstream os;
  os.precision(17);
  os << value;
  return os.str();
}

}  // namespace automodel::training
