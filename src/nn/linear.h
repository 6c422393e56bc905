#pragma once
// nn.Linear: y = x W^T + b with W [out, in].
#include "nn/module.h"

namespace automodel::nn {

class Linear : public Module {
 public:
  // Initialised as torch does: W and b uniform in +-1/sqrt(in_features), from the default generator.
  Linear(int64_t in_features, int64_t out_features, bool bias = true, DType dtype = DType::f32);
  Tensor forward(const Tensor& x) const;

  Tensor weight;
  Tensor bias;  // undefined without bias
};

}  // namespace automodel::nn
