#include "nn/linear.h"

#include <cmath>

#include "core/rng.h"
#include "nn/init.h"
#include "ops/matmul.h"

namespace automodel::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias, DType dtype) {
  double bound = 1.0 / std::sqrt(double(in_features));
  auto make = [&](const Shape& shape) {
    return init_enabled() ? rand_uniform(shape, -bound, bound, default_generator(), dtype)
                          : Tensor::empty(shape, dtype);
  };
  weight = make({out_features, in_features});
  weight.set_requires_grad(true);
  register_parameter("weight", &weight);
  if (with_bias) {
    bias = make({out_features});
    bias.set_requires_grad(true);
    register_parameter("bias", &bias);
  }
}

Tensor Linear::forward(const Tensor& x) const { return ops::linear(x, weight, bias); }

}  // namespace automodel::nn
