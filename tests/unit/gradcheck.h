#pragma once
// Finite-difference gradient check in double precision: the analytic gradient of
// L(inputs) = sum(f(inputs) * w), for a fixed random w, against central differences.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "autograd/engine.h"
#include "core/grad_node.h"
#include "core/rng.h"

namespace automodel::testing {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// inputs must be f64; those with requires_grad are checked. Elements are perturbed in place.
inline void expect_gradients_match(const Fn& f, std::vector<Tensor> inputs, double eps = 1e-6, double tol = 1e-6) {
  Tensor out = f(inputs);
  Generator gen(1234);
  Tensor w = randn(out.shape(), gen, DType::f64);
  std::vector<double> wv = w.to_doubles();
  auto loss = [&]() {
    NoGradGuard no_grad;
    std::vector<double> o = f(inputs).to_doubles();
    double s = 0;
    for (size_t i = 0; i < o.size(); ++i) s += o[i] * wv[i];
    return s;
  };
  for (Tensor& t : inputs)
    if (t.requires_grad()) t.set_grad(Tensor());
  autograd::backward({out}, {w});
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& t = inputs[k];
    if (!t.requires_grad()) continue;
    ASSERT_TRUE(t.grad().defined()) << "input " << k << " got no gradient";
    ASSERT_TRUE(t.is_contiguous());
    std::vector<double> analytic = t.grad().to_doubles();
    double* p = t.data<double>();
    double max_err = 0, max_ref = 1e-12;
    for (int64_t i = 0; i < t.numel(); ++i) {
      double orig = p[i];
      p[i] = orig + eps;
      double up = loss();
      p[i] = orig - eps;
      double down = loss();
      p[i] = orig;
      double numeric = (up - down) / (2 * eps);
      max_err = std::max(max_err, std::abs(numeric - analytic[size_t(i)]));
      max_ref = std::max(max_ref, std::abs(numeric));
    }
    EXPECT_LE(max_err / max_ref, tol) << "input " << k << ": max abs error " << max_err << " (max |grad| " << max_ref
                                      << ")";
  }
}

// A random f64 leaf that requires grad.
inline Tensor rand_leaf(const Shape& shape, uint64_t seed, bool requires_grad = true) {
  Generator gen(seed);
  Tensor t = randn(shape, gen, DType::f64);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

}  // namespace automodel::testing
