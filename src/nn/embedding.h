#pragma once
// nn.Embedding: rows of weight [num_embeddings, dim] looked up by token id.
#include "nn/module.h"

namespace automodel::nn {

class Embedding : public Module {
 public:
  // weight ~ N(0, 1) as torch initialises it; the padding row (if any) is zero.
  Embedding(int64_t num_embeddings, int64_t dim, int64_t padding_idx = -1, DType dtype = DType::f32);
  Tensor forward(const Tensor& ids) const;

  Tensor weight;
  int64_t padding_idx;
};

}  // namespace automodel::nn
