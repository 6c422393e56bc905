#pragma once
// Element types of tensors, the bf16 / f16 bit conversions every layer shares, and the one switch from a DType to
// its C++ storage type (visit_dtype), which every per-dtype dispatch goes through.
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "core/error.h"

namespace automodel {

enum class DType : uint8_t { f32, f64, bf16, f16, i32, i64, b8 };

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);
DType dtype_from_name(const std::string& name);  // "f32"/"float32", "bf16"/"bfloat16", ...
inline bool is_floating(DType dt) {
  return dt == DType::f32 || dt == DType::f64 || dt == DType::bf16 || dt == DType::f16;
}

// Storage-only 16-bit float types; arithmetic happens in float.
struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};

inline float bf16_to_float(bf16 v) {
  uint32_t u = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, NaN kept quiet (as torch does).
inline bf16 float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}

float f16_to_float(f16 v);
f16 float_to_f16(float f);

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::f32;
};
template <>
struct dtype_of<double> {
  static constexpr DType value = DType::f64;
};
template <>
struct dtype_of<bf16> {
  static constexpr DType value = DType::bf16;
};
template <>
struct dtype_of<f16> {
  static constexpr DType value = DType::f16;
};
template <>
struct dtype_of<int32_t> {
  static constexpr DType value = DType::i32;
};
template <>
struct dtype_of<int64_t> {
  static constexpr DType value = DType::i64;
};
template <>
struct dtype_of<bool> {
  static constexpr DType value = DType::b8;
};

// Load/store any storage type through its compute type (float for 16-bit floats).
inline float to_compute(float v) { return v; }
inline double to_compute(double v) { return v; }
inline float to_compute(bf16 v) { return bf16_to_float(v); }
inline float to_compute(f16 v) { return f16_to_float(v); }
template <class T, class C>
inline T from_compute(C v) {
  if constexpr (std::is_same_v<T, bf16>) {
    return float_to_bf16(float(v));
  } else if constexpr (std::is_same_v<T, f16>) {
    return float_to_f16(float(v));
  } else {
    return static_cast<T>(v);
  }
}

// Compute type of a storage type: double for double, float otherwise.
template <class T>
struct compute_type {
  using type = float;
};
template <>
struct compute_type<double> {
  using type = double;
};
template <class T>
using compute_t = typename compute_type<T>::type;

// Calls f(T{}) with T the storage type of dt (float, double, bf16, f16, int32_t, int64_t, bool) and returns what
// it returns: the one switch over DType.
template <class F>
decltype(auto) visit_dtype(DType dt, F&& f) {
  switch (dt) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::bf16: return f(bf16{});
    case DType::f16: return f(f16{});
    case DType::i32: return f(int32_t{});
    case DType::i64: return f(int64_t{});
    case DType::b8: return f(bool{});
  }
  throw Error(detail::str("unknown dtype code ", int(dt)), "visit_dtype");
}

// f(T{}) when dt's storage type T is one of Ts, else unsupported() (which must throw): f is instantiated only for
// those types, so its body may call overloads that exist for them alone.
template <class... Ts, class F, class Unsupported>
void visit_dtype_among(DType dt, F&& f, Unsupported&& unsupported) {
  visit_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    if constexpr ((std::is_same_v<T, Ts> || ...))
      f(tag);
    else
      unsupported();
  });
}

}  // namespace automodel
