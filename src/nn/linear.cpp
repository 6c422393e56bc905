#include "nn/linear.h"

#include <cmath>

#include "core/rng.h"
#include "ops/matmul.h"

namespace automodel::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias, DType dtype) {
  double bound = 1.0 / std::sqrt(double(in_features));
  weight = rand_uniform({out_features, in_features}, -bound, bound, default_generator(), dtype);
  weight.set_requires_grad(true);
  register_parameter("weight", &weight);
  if (with_bias) {
    bias = rand_uniform({out_features}, -bound, bound, default_generator(), dtype);
    bias.set_requires_grad(true);
    register_parameter("bias", &bias);
  }
}

Tensor Linear::forward(const Tensor& x) const { return ops::linear(x, weight, bias); }

}  // namespace automodel::nn
