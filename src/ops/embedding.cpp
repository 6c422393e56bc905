#include "ops/embedding.h"

#include "ops/backend.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

struct EmbeddingBackward : Node {
  Tensor ids;  // contiguous i32 / i64
  int64_t vocab = 0, padding_idx = -1;
  std::string name() const override { return "EmbeddingBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(grads[0].dtype() == outputs[0].dtype, "embedding backward: gradient ", grads[0].describe(), " for a ",
             dtype_name(outputs[0].dtype), " output");
    Tensor g = contiguous(grads[0]);
    AM_CHECK(g.shape() == outputs[0].shape, "embedding backward: gradient ", g.describe(), " for an output of shape ",
             shape_str(outputs[0].shape));
    const kernels::Backend& be = backend_of("embedding backward", g, ids);
    const int64_t hidden = g.size(-1);
    Tensor dw = Tensor::empty({vocab, hidden}, g.dtype(), g.device());
    be.embedding_backward(ids.dtype(), g.dtype(), ids.raw_data(), ids.numel(), g.raw_data(), vocab, hidden, padding_idx,
                          dw.raw_data());
    return {dw};
  }
  void release_saved() override { ids = Tensor(); }
};

}  // namespace

Tensor embedding(const Tensor& ids, const Tensor& weight, int64_t padding_idx) {
  check_defined(ids, "embedding", "ids");
  check_defined(weight, "embedding", "weight");
  const kernels::Backend& be = backend_of("embedding", weight, ids);
  if (ids.dtype() != DType::i64 && ids.dtype() != DType::i32)
    throw Error(detail::str("embedding: ids must be i64 or i32, got ", ids.describe()), "embedding",
                "pass token ids as an integer tensor");
  if (weight.dim() != 2)
    throw Error(detail::str("embedding: weight must be [vocab, hidden], got ", weight.describe()), "embedding");
  const int64_t vocab = weight.size(0), hidden = weight.size(1);
  if (padding_idx >= vocab)
    throw Error(detail::str("embedding: padding_idx ", padding_idx, " is out of range for vocab size ", vocab),
                "embedding", "use an index below the vocab size, or -1 for none");
  Tensor idc = contiguous(ids);
  Tensor w = contiguous(weight);
  int64_t bad_value = 0;
  const int64_t bad = be.first_bad_index(idc.dtype(), idc.raw_data(), idc.numel(), vocab, &bad_value);
  if (bad >= 0)
    throw Error(detail::str("embedding: id ", bad_value, " (at flat position ", bad,
                            ") is out of range for vocab size ", vocab),
                "embedding", "ids must be in [0, vocab size); check the tokenizer matches the model");
  Shape out_shape = ids.shape();
  out_shape.push_back(hidden);
  dispatch_floating(w.dtype(), "embedding", [](auto) {});
  Tensor out = Tensor::empty(out_shape, w.dtype(), w.device());
  be.embedding_forward(idc.dtype(), w.dtype(), idc.raw_data(), idc.numel(), w.raw_data(), hidden, out.raw_data());
  if (needs_grad(w)) {
    auto node = std::make_shared<EmbeddingBackward>();
    node->ids = idc;
    node->vocab = vocab;
    node->padding_idx = padding_idx;
    record(node, {w}, {out});
  }
  return out;
}

}  // namespace automodel::ops
