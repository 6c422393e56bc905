#pragma once
// The cases of backend_ops_test.cpp: one per entry of the backend table, each running its entry on a target backend
// on random inputs and returning the outputs beside the reference's.
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/backend.h"

namespace automodel::backend_test {

// A backend under test and the device its buffers live on.
struct Target {
  std::string name;
  const kernels::Backend* backend;
  Device device;
};

// The backends this build has, the CPU first (the one the others are compared with). A CUDA build adds
// {"cuda", &kernels::cuda_backend(gpu, "test"), gpu}.
std::vector<Target> targets();

// One output of a run: what the backend wrote and what the reference says, within tol (relative to max(1, |want|)).
struct Check {
  std::string what;
  std::vector<double> got, want;
  double tol;
};

struct Case {
  std::string kernel;         // the table entry it runs
  std::vector<DType> dtypes;  // the element types it runs in
  std::function<std::vector<Check>(const Target&, DType)> run;
};

std::vector<Case> all_cases();

// ---------------------------------------------------------------------------------------------
// Helpers for the cases

// The tolerance of a result computed in dt from inputs of dt.
double tolerance(DType dt);
// v as dt stores it.
double rounded(double v, DType dt);
std::vector<double> rounded(std::vector<double> v, DType dt);

// Uniform values in [lo, hi) rounded to dt, from a generator seeded by the case.
class Random {
 public:
  explicit Random(const std::string& seed);
  std::vector<double> values(int64_t n, DType dt, double lo = -2, double hi = 2);
  std::vector<double> integers(int64_t n, int64_t lo, int64_t hi);  // in [lo, hi]

 private:
  std::mt19937_64 gen_;
};

// A buffer on the target's device holding `values` as dt.
Tensor upload(const Target& t, const std::vector<double>& values, DType dt);
// An output buffer of n elements, filled with NaN (0 for integer types) so that an element a kernel leaves unwritten
// shows.
Tensor output(const Target& t, int64_t n, DType dt);
std::vector<double> download(const Tensor& t);
// The statistics type of dt (f32; f64 for f64).
DType stat_dtype(DType dt);

}  // namespace automodel::backend_test
