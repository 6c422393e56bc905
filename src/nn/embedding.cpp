#include "nn/embedding.h"

#include <cstring>

#include "core/rng.h"
#include "nn/init.h"
#include "ops/embedding.h"

namespace automodel::nn {

Embedding::Embedding(int64_t num_embeddings, int64_t dim, int64_t padding, DType dtype) : padding_idx(padding) {
  AM_CHECK(padding < num_embeddings, "Embedding: padding_idx ", padding, " >= num_embeddings ", num_embeddings);
  weight = init_enabled() ? randn({num_embeddings, dim}, default_generator(), dtype)
                          : Tensor::empty({num_embeddings, dim}, dtype);
  if (padding >= 0 && init_enabled())
    std::memset(static_cast<char*>(weight.raw_data()) + padding * dim * int64_t(dtype_size(dtype)), 0,
                size_t(dim) * dtype_size(dtype));
  weight.set_requires_grad(true);
  register_parameter("weight", &weight);
}

Tensor Embedding::forward(const Tensor& ids) const { return ops::embedding(ids, weight, padding_idx); }

}  // namespace automodel::nn
