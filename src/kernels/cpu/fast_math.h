#pragma once
// exp and tanh for the kernels' inner loops: float versions with no libm call, so the loops
// around them vectorise; double versions defer to libm (they serve the f64 gradient checks).
#include <cmath>
#include <cstdint>
#include <cstring>

namespace automodel::cpu {

// exp for float, written so loops over it vectorise (no libm call): Cephes' range reduction and
// degree-6 polynomial, within 2 ulp; 0 below ln(FLT_MIN), inf above ln(FLT_MAX), NaN stays NaN.
inline float exp_fast(float x) {
  constexpr float lo = -87.33654f, hi = 88.72283f;
  float xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t ni = int32_t(n), h = ni >> 1;
  int32_t b1 = (h + 127) << 23, b2 = (ni - h + 127) << 23;  // 2^n as two factors: n may be 128
  float s1, s2;
  std::memcpy(&s1, &b1, 4);
  std::memcpy(&s2, &b2, 4);
  float e = p * s1 * s2;
  e = x < lo ? 0.0f : e;
  return x > hi ? INFINITY : e;
}
inline double exp_fast(double x) { return std::exp(x); }

// tanh for float: odd Taylor polynomial below |x| = 0.3, (1 - e) / (1 + e) with e = exp(-2|x|) above.
inline float tanh_fast(float x) {
  float ax = std::fabs(x);
  float e = exp_fast(-2.0f * ax);
  float big = (1.0f - e) / (1.0f + e);
  float x2 = ax * ax;
  float p = 21844.0f / 6081075.0f;
  p = p * x2 - 1382.0f / 155925.0f;
  p = p * x2 + 62.0f / 2835.0f;
  p = p * x2 - 17.0f / 315.0f;
  p = p * x2 + 2.0f / 15.0f;
  p = p * x2 - 1.0f / 3.0f;
  float small = ax + ax * x2 * p;
  return std::copysign(ax < 0.3f ? small : big, x);
}
inline double tanh_fast(double x) { return std::tanh(x); }

}  // namespace automodel::cpu
