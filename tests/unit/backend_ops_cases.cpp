// The harness helpers of backend_ops_test.cpp and the cases of the table's layout, elementwise, activation,
// softmax and norm entries (the others: backend_ops_cases_more.cpp).
#include "backend_ops_cases.h"

#include <cmath>
#include <functional>
#include <limits>

#include "core/device_memory.h"

namespace automodel::backend_test {

std::vector<Target> targets() { return {{"cpu", &kernels::cpu_backend(), cpu_device()}}; }

double tolerance(DType dt) {
  switch (dt) {
    case DType::f64: return 1e-9;
    case DType::f32: return 2e-4;
    default: return 3e-2;
  }
}

double rounded(double v, DType dt) {
  return visit_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>)
      return double(to_compute(from_compute<T>(v)));
    else
      return double(static_cast<T>(v));
  });
}

std::vector<double> rounded(std::vector<double> v, DType dt) {
  for (double& x : v) x = rounded(x, dt);
  return v;
}

Random::Random(const std::string& seed) : gen_(std::hash<std::string>{}(seed)) {}

std::vector<double> Random::values(int64_t n, DType dt, double lo, double hi) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = rounded(u(gen_), dt);
  return v;
}

std::vector<double> Random::integers(int64_t n, int64_t lo, int64_t hi) {
  std::uniform_int_distribution<int64_t> u(lo, hi);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = double(u(gen_));
  return v;
}

Tensor upload(const Target& t, const std::vector<double>& values, DType dt) {
  return Tensor::from_values(values, {int64_t(values.size())}, dt, t.device);
}

Tensor output(const Target& t, int64_t n, DType dt) {
  return Tensor::full({n}, is_floating(dt) ? std::numeric_limits<double>::quiet_NaN() : 0.0, dt, t.device);
}

std::vector<double> download(const Tensor& t) { return t.to_doubles(); }

DType stat_dtype(DType dt) { return dt == DType::f64 ? DType::f64 : DType::f32; }

namespace {

constexpr int64_t kN = 53;  // odd: every vector loop has a tail
const std::vector<DType> kFloating{DType::f32, DType::f64, DType::bf16};

using Fn = std::function<double(double)>;

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }
double gelu_erf(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }
double gelu_erf_grad(double x) {
  return 0.5 * std::erfc(-x / std::sqrt(2.0)) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
}
constexpr double kBeta = 0.7978845608028654, kKappa = 0.044715;  // sqrt(2 / pi), torch's tanh-gelu constants
double gelu_tanh(double x) { return 0.5 * x * (1 + std::tanh(kBeta * (x + kKappa * x * x * x))); }
double gelu_tanh_grad(double x) {
  const double t = std::tanh(kBeta * (x + kKappa * x * x * x));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * kBeta * (1 + 3 * kKappa * x * x);
}
double silu(double x) { return x * sigmoid(x); }
double silu_grad(double x) { return sigmoid(x) * (1 + x * (1 - sigmoid(x))); }

std::vector<double> map(const std::vector<double>& x, const Fn& f) {
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = f(x[i]);
  return y;
}

// A unary activation's forward (y = f(x)) or backward (gx = g f'(x)) entry.
Case unary(
    const std::string& kernel, bool backward, double lo, double hi, const Fn& f, const Fn& df,
    const std::function<void(const Target&, DType, const Tensor&, const Tensor&, const Tensor&, int64_t)>& call) {
  return {kernel, kFloating, [=](const Target& t, DType dt) {
            Random r(kernel);
            const std::vector<double> x = r.values(kN, dt, lo, hi), g = r.values(kN, dt);
            Tensor out = output(t, kN, dt);
            call(t, dt, upload(t, x, dt), upload(t, g, dt), out, kN);
            std::vector<double> want(kN);
            for (int64_t i = 0; i < kN; ++i)
              want[size_t(i)] = backward ? g[size_t(i)] * df(x[size_t(i)]) : f(x[size_t(i)]);
            return std::vector<Check>{{backward ? "gx" : "y", download(out), want, tolerance(dt)}};
          }};
}

// A gated activation act(gate) * up, forward or backward.
Case gated(const std::string& kernel, bool backward, const Fn& act, const Fn& dact) {
  return {kernel, kFloating, [=](const Target& t, DType dt) {
            Random r(kernel);
            const std::vector<double> gate = r.values(kN, dt), up = r.values(kN, dt), g = r.values(kN, dt);
            Tensor tg = upload(t, gate, dt), tu = upload(t, up, dt), y = output(t, kN, dt);
            Tensor dgate = output(t, kN, dt), dup = output(t, kN, dt);
            const kernels::Backend& be = *t.backend;
            const bool gelu = kernel.rfind("geglu", 0) == 0;
            if (!backward) {
              (gelu ? be.geglu_tanh_forward : be.swiglu_forward)(dt, tg.raw_data(), tu.raw_data(), y.raw_data(), kN);
              std::vector<double> want(kN);
              for (size_t i = 0; i < want.size(); ++i) want[i] = act(gate[i]) * up[i];
              return std::vector<Check>{{"y", download(y), want, tolerance(dt)}};
            }
            Tensor tgrad = upload(t, g, dt);
            (gelu ? be.geglu_tanh_backward : be.swiglu_backward)(dt, tg.raw_data(), tu.raw_data(), tgrad.raw_data(),
                                                                 dgate.raw_data(), dup.raw_data(), kN);
            std::vector<double> want_gate(kN), want_up(kN);
            for (size_t i = 0; i < want_gate.size(); ++i) {
              want_gate[i] = g[i] * up[i] * dact(gate[i]);
              want_up[i] = g[i] * act(gate[i]);
            }
            // Either gradient may be skipped (null).
            Tensor only_up = output(t, kN, dt);
            (gelu ? be.geglu_tanh_backward : be.swiglu_backward)(dt, tg.raw_data(), tu.raw_data(), tgrad.raw_data(),
                                                                 nullptr, only_up.raw_data(), kN);
            return std::vector<Check>{{"dgate", download(dgate), want_gate, tolerance(dt)},
                                      {"dup", download(dup), want_up, tolerance(dt)},
                                      {"dup alone", download(only_up), want_up, tolerance(dt)}};
          }};
}

// Row-major strides of shape.
std::vector<int64_t> strides_of(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) s[i - 1] = s[i] * shape[i];
  return s;
}

// The flat offset of multi-index idx under strides.
int64_t offset(const std::vector<int64_t>& idx, const std::vector<int64_t>& strides) {
  int64_t o = 0;
  for (size_t d = 0; d < idx.size(); ++d) o += idx[d] * strides[d];
  return o;
}

// Calls f(idx) for every multi-index of shape in row-major order.
void for_each_index(const std::vector<int64_t>& shape, const std::function<void(const std::vector<int64_t>&)>& f) {
  int64_t total = 1;
  for (int64_t s : shape) total *= s;
  std::vector<int64_t> idx(shape.size(), 0);
  for (int64_t k = 0; k < total; ++k) {
    f(idx);
    for (size_t d = shape.size(); d-- > 0;) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}

double binary_value(kernels::BinaryOp op, double a, double b) {
  switch (op) {
    case kernels::BinaryOp::add: return a + b;
    case kernels::BinaryOp::sub: return a - b;
    case kernels::BinaryOp::mul: return a * b;
    case kernels::BinaryOp::div: return a / b;
  }
  return 0;
}

const kernels::BinaryOp kBinaryOps[] = {kernels::BinaryOp::add, kernels::BinaryOp::sub, kernels::BinaryOp::mul,
                                        kernels::BinaryOp::div};
const char* const kBinaryNames[] = {"add", "sub", "mul", "div"};

// b with |b| >= 0.5, so that divisions stay tame.
std::vector<double> away_from_zero(std::vector<double> b, DType dt) {
  for (double& v : b)
    if (std::abs(v) < 0.5) v = rounded(v < 0 ? v - 0.5 : v + 0.5, dt);
  return b;
}

// The softmax (or log-softmax) of x [outer, dim, inner] along dim.
std::vector<double> softmax_ref(const std::vector<double>& x, int64_t outer, int64_t dim, int64_t inner, bool log) {
  std::vector<double> y(x.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t d) { return size_t((o * dim + d) * inner + i); };
      double m = -INFINITY, s = 0;
      for (int64_t d = 0; d < dim; ++d) m = std::max(m, x[at(d)]);
      for (int64_t d = 0; d < dim; ++d) s += std::exp(x[at(d)] - m);
      for (int64_t d = 0; d < dim; ++d) y[at(d)] = log ? x[at(d)] - m - std::log(s) : std::exp(x[at(d)] - m) / s;
    }
  return y;
}

// The softmax gradient from the output y: softmax: y (g - sum g y); log: g - exp(y) sum g.
std::vector<double> softmax_grad_ref(const std::vector<double>& y, const std::vector<double>& g, int64_t outer,
                                     int64_t dim, int64_t inner, bool log) {
  std::vector<double> gx(y.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t d) { return size_t((o * dim + d) * inner + i); };
      double s = 0;
      for (int64_t d = 0; d < dim; ++d) s += log ? g[at(d)] : g[at(d)] * y[at(d)];
      for (int64_t d = 0; d < dim; ++d) gx[at(d)] = log ? g[at(d)] - std::exp(y[at(d)]) * s : y[at(d)] * (g[at(d)] - s);
    }
  return gx;
}

struct NormRef {
  std::vector<double> y, mean, rstd;
};

// RMSNorm (w' = w, or 1 + w with unit_offset) or LayerNorm of x [rows, hidden].
NormRef norm_ref(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b, int64_t rows,
                 int64_t hidden, double eps, bool layer, bool unit_offset) {
  NormRef r{std::vector<double>(x.size()), std::vector<double>(size_t(rows)), std::vector<double>(size_t(rows))};
  for (int64_t i = 0; i < rows; ++i) {
    const double* xr = x.data() + i * hidden;
    double mean = 0, ss = 0;
    if (layer)
      for (int64_t h = 0; h < hidden; ++h) mean += xr[h] / double(hidden);
    for (int64_t h = 0; h < hidden; ++h) ss += (xr[h] - mean) * (xr[h] - mean);
    const double rstd = 1 / std::sqrt(ss / double(hidden) + eps);
    r.mean[size_t(i)] = mean;
    r.rstd[size_t(i)] = rstd;
    for (int64_t h = 0; h < hidden; ++h) {
      const double wh = w.empty() ? 1.0 : (unit_offset ? 1 + w[size_t(h)] : w[size_t(h)]);
      r.y[size_t(i * hidden + h)] = (xr[h] - mean) * rstd * wh + (b.empty() ? 0.0 : b[size_t(h)]);
    }
  }
  return r;
}

struct NormGrads {
  std::vector<double> dx, dw, db;
};

// Gradients of norm_ref (dx + dx_add).
NormGrads norm_grad_ref(const std::vector<double>& g, const std::vector<double>& x, const std::vector<double>& w,
                        const std::vector<double>& mean, const std::vector<double>& rstd, int64_t rows, int64_t hidden,
                        bool layer, bool unit_offset, const std::vector<double>& dx_add) {
  NormGrads r{std::vector<double>(x.size()), std::vector<double>(size_t(hidden)), std::vector<double>(size_t(hidden))};
  for (int64_t i = 0; i < rows; ++i) {
    std::vector<double> xhat(static_cast<size_t>(hidden)), dxhat(static_cast<size_t>(hidden));
    double mean_d = 0, mean_dx = 0;
    for (int64_t h = 0; h < hidden; ++h) {
      const size_t k = size_t(i * hidden + h);
      xhat[size_t(h)] = (x[k] - mean[size_t(i)]) * rstd[size_t(i)];
      const double wh = w.empty() ? 1.0 : (unit_offset ? 1 + w[size_t(h)] : w[size_t(h)]);
      dxhat[size_t(h)] = g[k] * wh;
      mean_d += dxhat[size_t(h)] / double(hidden);
      mean_dx += dxhat[size_t(h)] * xhat[size_t(h)] / double(hidden);
      r.dw[size_t(h)] += g[k] * xhat[size_t(h)];
      r.db[size_t(h)] += g[k];
    }
    for (int64_t h = 0; h < hidden; ++h) {
      const size_t k = size_t(i * hidden + h);
      r.dx[k] = rstd[size_t(i)] * (dxhat[size_t(h)] - (layer ? mean_d : 0.0) - xhat[size_t(h)] * mean_dx) +
                (dx_add.empty() ? 0.0 : dx_add[k]);
    }
  }
  return r;
}

void layout_cases(std::vector<Case>& cases) {
  cases.push_back({"strided_copy", kFloating, [](const Target& t, DType dt) {
                     // A [3, 4, 5] view with permuted strides into a contiguous [3, 4, 5].
                     Random r("strided_copy");
                     const std::vector<int64_t> shape{3, 4, 5}, src_strides{1, 15, 3}, dst_strides = strides_of(shape);
                     const std::vector<double> src = r.values(60, dt);
                     Tensor s = upload(t, src, dt), d = output(t, 60, dt);
                     t.backend->strided_copy(s.raw_data(), src_strides.data(), d.raw_data(), dst_strides.data(),
                                             shape.data(), 3, dtype_size(dt));
                     std::vector<double> want(60);
                     for_each_index(shape, [&](const std::vector<int64_t>& i) {
                       want[size_t(offset(i, dst_strides))] = src[size_t(offset(i, src_strides))];
                     });
                     return std::vector<Check>{{"dst", download(d), want, 0}};
                   }});
  cases.push_back({"cast", kFloating, [](const Target& t, DType dt) {
                     // dt to every type and back from f32; integers truncate toward zero.
                     Random r("cast");
                     const std::vector<double> x = r.values(kN, dt, -100, 100);
                     Tensor src = upload(t, x, dt);
                     std::vector<Check> checks;
                     for (DType to : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64}) {
                       Tensor dst = output(t, kN, to);
                       t.backend->cast(src.raw_data(), dt, dst.raw_data(), to, kN);
                       std::vector<double> want = x;
                       for (double& v : want) v = is_floating(to) ? rounded(v, to) : std::trunc(v);
                       checks.push_back({std::string("to ") + dtype_name(to), download(dst), want, 0});
                     }
                     return checks;
                   }});
  cases.push_back({"add_same_shape", kFloating, [](const Target& t, DType dt) {
                     Random r("add_same_shape");
                     const std::vector<double> a = r.values(kN, dt), b = r.values(kN, dt);
                     Tensor ta = upload(t, a, dt), tb = upload(t, b, dt), out = output(t, kN, dt);
                     t.backend->add_same_shape(dt, ta.raw_data(), tb.raw_data(), out.raw_data(), kN);
                     std::vector<double> want(a.size());
                     for (size_t i = 0; i < a.size(); ++i) want[i] = a[i] + b[i];
                     return std::vector<Check>{{"out", download(out), want, tolerance(dt)}};
                   }});
}

void elementwise_cases(std::vector<Case>& cases) {
  cases.push_back({"binary_forward", kFloating, [](const Target& t, DType dt) {
                     Random r("binary_forward");
                     const std::vector<double> a = r.values(kN, dt), b = away_from_zero(r.values(kN, dt), dt);
                     Tensor ta = upload(t, a, dt), tb = upload(t, b, dt);
                     std::vector<Check> checks;
                     for (int k = 0; k < 4; ++k) {
                       Tensor out = output(t, kN, dt);
                       t.backend->binary_forward(kBinaryOps[k], dt, ta.raw_data(), tb.raw_data(), out.raw_data(), kN);
                       std::vector<double> want(a.size());
                       for (size_t i = 0; i < a.size(); ++i) want[i] = binary_value(kBinaryOps[k], a[i], b[i]);
                       checks.push_back({kBinaryNames[k], download(out), want, tolerance(dt)});
                     }
                     return checks;
                   }});
  cases.push_back({"binary_forward_strided", kFloating, [](const Target& t, DType dt) {
                     // a [3, 1, 5] op b [4, 5] -> [3, 4, 5].
                     Random r("binary_forward_strided");
                     const std::vector<int64_t> shape{3, 4, 5}, as{5, 0, 1}, bs{0, 5, 1};
                     const std::vector<double> a = r.values(15, dt), b = away_from_zero(r.values(20, dt), dt);
                     Tensor ta = upload(t, a, dt), tb = upload(t, b, dt);
                     std::vector<Check> checks;
                     for (int k = 0; k < 4; ++k) {
                       Tensor out = output(t, 60, dt);
                       t.backend->binary_forward_strided(kBinaryOps[k], dt, ta.raw_data(), as.data(), tb.raw_data(),
                                                         bs.data(), out.raw_data(), shape.data(), 3);
                       std::vector<double> want(60);
                       for_each_index(shape, [&](const std::vector<int64_t>& i) {
                         want[size_t(offset(i, strides_of(shape)))] =
                             binary_value(kBinaryOps[k], a[size_t(offset(i, as))], b[size_t(offset(i, bs))]);
                       });
                       checks.push_back({kBinaryNames[k], download(out), want, tolerance(dt)});
                     }
                     return checks;
                   }});
  cases.push_back({"binary_backward", kFloating, [](const Target& t, DType dt) {
                     // Gradients of a [3, 1, 5] op b [4, 5] at the output's shape [3, 4, 5]; for bf16 also into an
                     // f32 gradient.
                     Random r("binary_backward");
                     const std::vector<int64_t> shape{3, 4, 5}, as{5, 0, 1}, bs{0, 5, 1};
                     const std::vector<double> a = r.values(15, dt), b = away_from_zero(r.values(20, dt), dt);
                     const std::vector<double> g = r.values(60, dt);
                     Tensor ta = upload(t, a, dt), tb = upload(t, b, dt), tg = upload(t, g, dt);
                     std::vector<Check> checks;
                     for (int k = 0; k < 4; ++k)
                       for (int which = 0; which < 2; ++which)
                         for (DType gdt : dt == DType::bf16 ? std::vector<DType>{dt, DType::f32} : std::vector{dt}) {
                           Tensor grad = output(t, 60, gdt);
                           t.backend->binary_backward(kBinaryOps[k], which, dt, gdt, tg.raw_data(), ta.raw_data(),
                                                      as.data(), tb.raw_data(), bs.data(), grad.raw_data(),
                                                      shape.data(), 3);
                           std::vector<double> want(60);
                           for_each_index(shape, [&](const std::vector<int64_t>& i) {
                             const int64_t o = offset(i, strides_of(shape));
                             const double av = a[size_t(offset(i, as))], bv = b[size_t(offset(i, bs))];
                             const double gv = g[size_t(o)];
                             double d = 0;
                             switch (kBinaryOps[k]) {
                               case kernels::BinaryOp::add: d = gv; break;
                               case kernels::BinaryOp::sub: d = which == 0 ? gv : -gv; break;
                               case kernels::BinaryOp::mul: d = which == 0 ? gv * bv : gv * av; break;
                               case kernels::BinaryOp::div: d = which == 0 ? gv / bv : -gv * av / (bv * bv); break;
                             }
                             want[size_t(o)] = d;
                           });
                           checks.push_back({std::string(kBinaryNames[k]) + (which ? " gb " : " ga ") + dtype_name(gdt),
                                             download(grad), want, tolerance(dt)});
                         }
                     return checks;
                   }});
  cases.push_back(
      {"scale", kFloating, [](const Target& t, DType dt) {
         Random r("scale");
         const std::vector<double> x = r.values(kN, dt);
         Tensor tx = upload(t, x, dt), out = output(t, kN, dt);
         t.backend->scale(dt, tx.raw_data(), -0.375, out.raw_data(), kN);
         return std::vector<Check>{{"out", download(out), map(x, [](double v) { return v * -0.375; }), tolerance(dt)}};
       }});
  // sum over dims {0, 2} of [3, 4, 5], times 0.5, and its backward.
  cases.push_back({"sum_forward", kFloating, [](const Target& t, DType dt) {
                     Random r("sum_forward");
                     const std::vector<int64_t> shape{3, 4, 5};
                     const uint8_t reduce[] = {1, 0, 1};
                     const std::vector<double> x = r.values(60, dt);
                     Tensor tx = upload(t, x, dt), out = output(t, 4, dt);
                     t.backend->sum_forward(dt, tx.raw_data(), shape.data(), 3, reduce, 0.5, out.raw_data());
                     std::vector<double> want(4, 0.0);
                     for_each_index(shape, [&](const std::vector<int64_t>& i) {
                       want[size_t(i[1])] += 0.5 * x[size_t(offset(i, strides_of(shape)))];
                     });
                     return std::vector<Check>{{"out", download(out), want, tolerance(dt)}};
                   }});
  cases.push_back({"sum_backward", kFloating, [](const Target& t, DType dt) {
                     Random r("sum_backward");
                     const std::vector<int64_t> shape{3, 4, 5};
                     const uint8_t reduce[] = {1, 0, 1};
                     const std::vector<double> g = r.values(4, dt);
                     Tensor tg = upload(t, g, dt), gx = output(t, 60, dt);
                     t.backend->sum_backward(dt, tg.raw_data(), shape.data(), 3, reduce, 0.5, gx.raw_data());
                     std::vector<double> want(60);
                     for_each_index(shape, [&](const std::vector<int64_t>& i) {
                       want[size_t(offset(i, strides_of(shape)))] = 0.5 * g[size_t(i[1])];
                     });
                     return std::vector<Check>{{"gx", download(gx), want, tolerance(dt)}};
                   }});
}

void activation_cases(std::vector<Case>& cases) {
  const double cap = 1.5;
  auto softcap = [=](double x) { return cap * std::tanh(x / cap); };
  auto softcap_grad = [=](double x) { return 1 - std::tanh(x / cap) * std::tanh(x / cap); };
  auto rsqrt = [](double x) { return 1 / std::sqrt(x); };
  auto rsqrt_grad = [](double x) { return -0.5 / (x * std::sqrt(x)); };
  using Call = std::function<void(const Target&, DType, const Tensor&, const Tensor&, const Tensor&, int64_t)>;
  auto fwd = [](auto entry) -> Call {
    return [=](const Target& t, DType dt, const Tensor& x, const Tensor&, const Tensor& y, int64_t n) {
      entry(*t.backend, dt, x.raw_data(), y.raw_data(), n);
    };
  };
  auto bwd = [](auto entry) -> Call {
    return [=](const Target& t, DType dt, const Tensor& x, const Tensor& g, const Tensor& gx, int64_t n) {
      entry(*t.backend, dt, x.raw_data(), g.raw_data(), gx.raw_data(), n);
    };
  };
  using B = const kernels::Backend&;
  cases.push_back(unary("silu_forward", false, -4, 4, silu, silu_grad,
                        fwd([](B b, DType dt, const void* x, void* y, int64_t n) { b.silu_forward(dt, x, y, n); })));
  cases.push_back(unary(
      "silu_backward", true, -4, 4, silu, silu_grad,
      bwd([](B b, DType dt, const void* x, const void* g, void* gx, int64_t n) { b.silu_backward(dt, x, g, gx, n); })));
  cases.push_back({"gelu_forward", kFloating, [](const Target& t, DType dt) {
                     std::vector<Check> checks;
                     for (bool approx : {false, true}) {
                       Random r("gelu_forward");
                       const std::vector<double> x = r.values(kN, dt, -4, 4);
                       Tensor tx = upload(t, x, dt), y = output(t, kN, dt);
                       t.backend->gelu_forward(dt, tx.raw_data(), y.raw_data(), kN, approx);
                       checks.push_back({approx ? "tanh" : "erf", download(y), map(x, approx ? gelu_tanh : gelu_erf),
                                         tolerance(dt)});
                     }
                     return checks;
                   }});
  cases.push_back({"gelu_backward", kFloating, [](const Target& t, DType dt) {
                     std::vector<Check> checks;
                     for (bool approx : {false, true}) {
                       Random r("gelu_backward");
                       const std::vector<double> x = r.values(kN, dt, -4, 4), g = r.values(kN, dt);
                       Tensor tx = upload(t, x, dt), tg = upload(t, g, dt), gx = output(t, kN, dt);
                       t.backend->gelu_backward(dt, tx.raw_data(), tg.raw_data(), gx.raw_data(), kN, approx);
                       std::vector<double> want(x.size());
                       for (size_t i = 0; i < x.size(); ++i)
                         want[i] = g[i] * (approx ? gelu_tanh_grad(x[i]) : gelu_erf_grad(x[i]));
                       checks.push_back({approx ? "tanh" : "erf", download(gx), want, tolerance(dt)});
                     }
                     return checks;
                   }});
  cases.push_back(
      unary("softcap_forward", false, -6, 6, softcap, softcap_grad,
            fwd([=](B b, DType dt, const void* x, void* y, int64_t n) { b.softcap_forward(dt, x, y, n, cap); })));
  cases.push_back(unary("softcap_backward", true, -6, 6, softcap, softcap_grad,
                        bwd([=](B b, DType dt, const void* x, const void* g, void* gx, int64_t n) {
                          b.softcap_backward(dt, x, g, gx, n, cap);
                        })));
  cases.push_back(unary("rsqrt_forward", false, 0.25, 4, rsqrt, rsqrt_grad,
                        fwd([](B b, DType dt, const void* x, void* y, int64_t n) { b.rsqrt_forward(dt, x, y, n); })));
  cases.push_back(unary("rsqrt_backward", true, 0.25, 4, rsqrt, rsqrt_grad,
                        bwd([](B b, DType dt, const void* x, const void* g, void* gx, int64_t n) {
                          b.rsqrt_backward(dt, x, g, gx, n);
                        })));
  cases.push_back(gated("swiglu_forward", false, silu, silu_grad));
  cases.push_back(gated("swiglu_backward", true, silu, silu_grad));
  cases.push_back(gated("geglu_tanh_forward", false, gelu_tanh, gelu_tanh_grad));
  cases.push_back(gated("geglu_tanh_backward", true, gelu_tanh, gelu_tanh_grad));
}

void softmax_cases(std::vector<Case>& cases) {
  // [outer, dim, inner] = [3, 37, 1] (the last dim) and [2, 9, 20].
  const int64_t layouts[2][3] = {{3, 37, 1}, {2, 9, 20}};
  cases.push_back({"softmax_forward", kFloating, [=](const Target& t, DType dt) {
                     std::vector<Check> checks;
                     for (const auto& l : layouts)
                       for (bool log : {false, true}) {
                         Random r("softmax_forward");
                         const int64_t n = l[0] * l[1] * l[2];
                         const std::vector<double> x = r.values(n, dt, -5, 5);
                         Tensor tx = upload(t, x, dt), y = output(t, n, dt);
                         t.backend->softmax_forward(dt, tx.raw_data(), y.raw_data(), l[0], l[1], l[2], log);
                         checks.push_back({log ? "log" : "softmax", download(y), softmax_ref(x, l[0], l[1], l[2], log),
                                           tolerance(dt)});
                       }
                     return checks;
                   }});
  for (bool from_input : {false, true}) {
    const std::string kernel = from_input ? "softmax_backward_from_input" : "softmax_backward";
    const std::vector<DType> dtypes = from_input ? std::vector<DType>{DType::bf16} : kFloating;
    cases.push_back({kernel, dtypes, [=](const Target& t, DType dt) {
                       std::vector<Check> checks;
                       for (const auto& l : layouts)
                         for (bool log : {false, true}) {
                           Random r(kernel);
                           const int64_t n = l[0] * l[1] * l[2];
                           const std::vector<double> x = r.values(n, dt, -5, 5), g = r.values(n, dt);
                           // The saved output as the forward stored it (rounded), or the input itself.
                           const std::vector<double> y = rounded(softmax_ref(x, l[0], l[1], l[2], log), dt);
                           Tensor saved = upload(t, from_input ? x : y, dt), tg = upload(t, g, dt);
                           Tensor gx = output(t, n, dt);
                           (from_input ? t.backend->softmax_backward_from_input : t.backend->softmax_backward)(
                               dt, saved.raw_data(), tg.raw_data(), gx.raw_data(), l[0], l[1], l[2], log);
                           const std::vector<double> exact = softmax_ref(x, l[0], l[1], l[2], log);
                           checks.push_back({log ? "log" : "softmax", download(gx),
                                             softmax_grad_ref(from_input ? exact : y, g, l[0], l[1], l[2], log),
                                             tolerance(dt)});
                         }
                       return checks;
                     }});
  }
}

void norm_cases(std::vector<Case>& cases) {
  const int64_t rows = 7, hidden = 37;
  const double eps = 1e-5;
  cases.push_back({"rmsnorm_forward", kFloating, [=](const Target& t, DType dt) {
                     std::vector<Check> checks;
                     for (int variant = 0; variant < 3; ++variant) {  // weight, unit offset, no weight
                       Random r("rmsnorm_forward");
                       const std::vector<double> x = r.values(rows * hidden, dt), w = r.values(hidden, dt);
                       const bool unit = variant == 1, no_w = variant == 2;
                       Tensor tx = upload(t, x, dt), tw = upload(t, w, dt);
                       Tensor y = output(t, rows * hidden, dt), rstd = output(t, rows, stat_dtype(dt));
                       t.backend->rmsnorm_forward(dt, tx.raw_data(), no_w ? nullptr : tw.raw_data(), y.raw_data(),
                                                  rstd.raw_data(), rows, hidden, eps, unit);
                       const NormRef want =
                           norm_ref(x, no_w ? std::vector<double>{} : w, {}, rows, hidden, eps, false, unit);
                       const std::string v = std::to_string(variant);
                       checks.push_back({"y " + v, download(y), want.y, tolerance(dt)});
                       checks.push_back({"rstd " + v, download(rstd), want.rstd, tolerance(stat_dtype(dt))});
                     }
                     return checks;
                   }});
  cases.push_back({"add_rmsnorm_forward", kFloating, [=](const Target& t, DType dt) {
                     Random r("add_rmsnorm_forward");
                     const std::vector<double> x = r.values(rows * hidden, dt), res = r.values(rows * hidden, dt);
                     const std::vector<double> w = r.values(hidden, dt);
                     Tensor tx = upload(t, x, dt), tr = upload(t, res, dt), tw = upload(t, w, dt);
                     Tensor sum = output(t, rows * hidden, dt), y = output(t, rows * hidden, dt);
                     Tensor rstd = output(t, rows, stat_dtype(dt));
                     t.backend->add_rmsnorm_forward(dt, tx.raw_data(), tr.raw_data(), tw.raw_data(), sum.raw_data(),
                                                    y.raw_data(), rstd.raw_data(), rows, hidden, eps, false);
                     std::vector<double> s(x.size());
                     for (size_t i = 0; i < s.size(); ++i) s[i] = rounded(x[i] + res[i], dt);
                     const NormRef want = norm_ref(s, w, {}, rows, hidden, eps, false, false);
                     return std::vector<Check>{{"sum", download(sum), s, 0},
                                               {"y", download(y), want.y, tolerance(dt)},
                                               {"rstd", download(rstd), want.rstd, tolerance(stat_dtype(dt))}};
                   }});
  cases.push_back({"rmsnorm_backward", kFloating, [=](const Target& t, DType dt) {
                     std::vector<Check> checks;
                     for (int variant = 0; variant < 3; ++variant) {  // weight + dx_add, unit offset, no weight
                       Random r("rmsnorm_backward");
                       const std::vector<double> x = r.values(rows * hidden, dt), w = r.values(hidden, dt);
                       const std::vector<double> g = r.values(rows * hidden, dt), add = r.values(rows * hidden, dt);
                       const bool unit = variant == 1, no_w = variant == 2, with_add = variant == 0;
                       const std::vector<double> wv = no_w ? std::vector<double>{} : w;
                       const NormRef fwd = norm_ref(x, wv, {}, rows, hidden, eps, false, unit);
                       const std::vector<double> rstd = rounded(fwd.rstd, stat_dtype(dt));
                       Tensor tx = upload(t, x, dt), tw = upload(t, w, dt), tg = upload(t, g, dt);
                       Tensor ta = upload(t, add, dt), tr = upload(t, rstd, stat_dtype(dt));
                       Tensor dx = output(t, rows * hidden, dt), dw = output(t, hidden, dt);
                       t.backend->rmsnorm_backward(dt, tg.raw_data(), tx.raw_data(), no_w ? nullptr : tw.raw_data(),
                                                   tr.raw_data(), dx.raw_data(), no_w ? nullptr : dw.raw_data(), rows,
                                                   hidden, unit, with_add ? ta.raw_data() : nullptr);
                       const NormGrads want =
                           norm_grad_ref(g, x, wv, std::vector<double>(size_t(rows), 0.0), rstd, rows, hidden, false,
                                         unit, with_add ? add : std::vector<double>{});
                       const std::string v = std::to_string(variant);
                       checks.push_back({"dx " + v, download(dx), want.dx, tolerance(dt)});
                       if (!no_w) checks.push_back({"dw " + v, download(dw), want.dw, tolerance(dt)});
                     }
                     return checks;
                   }});
  cases.push_back({"layernorm_forward", kFloating, [=](const Target& t, DType dt) {
                     Random r("layernorm_forward");
                     const std::vector<double> x = r.values(rows * hidden, dt, -1, 3), w = r.values(hidden, dt);
                     const std::vector<double> b = r.values(hidden, dt);
                     Tensor tx = upload(t, x, dt), tw = upload(t, w, dt), tb = upload(t, b, dt);
                     Tensor y = output(t, rows * hidden, dt), mean = output(t, rows, stat_dtype(dt));
                     Tensor rstd = output(t, rows, stat_dtype(dt));
                     t.backend->layernorm_forward(dt, tx.raw_data(), tw.raw_data(), tb.raw_data(), y.raw_data(),
                                                  mean.raw_data(), rstd.raw_data(), rows, hidden, eps);
                     const NormRef want = norm_ref(x, w, b, rows, hidden, eps, true, false);
                     return std::vector<Check>{{"y", download(y), want.y, tolerance(dt)},
                                               {"mean", download(mean), want.mean, tolerance(stat_dtype(dt))},
                                               {"rstd", download(rstd), want.rstd, tolerance(stat_dtype(dt))}};
                   }});
  cases.push_back({"layernorm_backward", kFloating, [=](const Target& t, DType dt) {
                     Random r("layernorm_backward");
                     const std::vector<double> x = r.values(rows * hidden, dt, -1, 3), w = r.values(hidden, dt);
                     const std::vector<double> g = r.values(rows * hidden, dt);
                     const NormRef fwd = norm_ref(x, w, {}, rows, hidden, eps, true, false);
                     const std::vector<double> mean = rounded(fwd.mean, stat_dtype(dt));
                     const std::vector<double> rstd = rounded(fwd.rstd, stat_dtype(dt));
                     Tensor tx = upload(t, x, dt), tw = upload(t, w, dt), tg = upload(t, g, dt);
                     Tensor tm = upload(t, mean, stat_dtype(dt)), tr = upload(t, rstd, stat_dtype(dt));
                     Tensor dx = output(t, rows * hidden, dt), dw = output(t, hidden, dt), db = output(t, hidden, dt);
                     t.backend->layernorm_backward(dt, tg.raw_data(), tx.raw_data(), tw.raw_data(), tm.raw_data(),
                                                   tr.raw_data(), dx.raw_data(), dw.raw_data(), db.raw_data(), rows,
                                                   hidden);
                     const NormGrads want = norm_grad_ref(g, x, w, mean, rstd, rows, hidden, true, false, {});
                     return std::vector<Check>{{"dx", download(dx), want.dx, tolerance(dt)},
                                               {"dw", download(dw), want.dw, tolerance(dt)},
                                               {"db", download(db), want.db, tolerance(dt)}};
                   }});
}

}  // namespace

void more_cases(std::vector<Case>& cases);  // backend_ops_cases_more.cpp

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  layout_cases(cases);
  elementwise_cases(cases);
  activation_cases(cases);
  softmax_cases(cases);
  norm_cases(cases);
  more_cases(cases);
  return cases;
}

}  // namespace automodel::backend_test
