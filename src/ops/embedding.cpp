#include "ops/embedding.h"

#include "kernels/cpu/embedding.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

template <class F>
void dispatch_index(DType dt, F&& f) {
  if (dt == DType::i64)
    f(int64_t{});
  else
    f(int32_t{});
}

struct EmbeddingBackward : Node {
  Tensor ids;  // contiguous i32 / i64
  int64_t vocab = 0, padding_idx = -1;
  std::string name() const override { return "EmbeddingBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(grads[0].dtype() == outputs[0].dtype, "embedding backward: gradient ", grads[0].describe(), " for a ",
             dtype_name(outputs[0].dtype), " output");
    Tensor g = contiguous(grads[0]);
    const int64_t hidden = g.size(-1);
    Tensor dw = Tensor::empty({vocab, hidden}, g.dtype());
    dispatch_floating(g.dtype(), "embedding backward", [&](auto tag) {
      using T = decltype(tag);
      dispatch_index(ids.dtype(), [&](auto itag) {
        using I = decltype(itag);
        cpu::embedding_backward(ids.data<I>(), ids.numel(), g.data<T>(), vocab, hidden, padding_idx, dw.data<T>());
      });
    });
    return {dw};
  }
  void release_saved() override { ids = Tensor(); }
};

}  // namespace

Tensor embedding(const Tensor& ids, const Tensor& weight, int64_t padding_idx) {
  check_defined(ids, "embedding", "ids");
  check_defined(weight, "embedding", "weight");
  check_cpu(ids, "embedding");
  check_cpu(weight, "embedding");
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
  int64_t bad = -1, bad_value = 0;
  dispatch_index(idc.dtype(), [&](auto itag) {
    using I = decltype(itag);
    bad = cpu::embedding_first_bad_id(idc.data<I>(), idc.numel(), vocab);
    if (bad >= 0) bad_value = int64_t(idc.data<I>()[bad]);
  });
  if (bad >= 0)
    throw Error(detail::str("embedding: id ", bad_value, " (at flat position ", bad,
                            ") is out of range for vocab size ", vocab),
                "embedding", "ids must be in [0, vocab size); check the tokenizer matches the model");
  Shape out_shape = ids.shape();
  out_shape.push_back(hidden);
  Tensor out = Tensor::empty(out_shape, w.dtype());
  dispatch_floating(w.dtype(), "embedding", [&](auto tag) {
    using T = decltype(tag);
    dispatch_index(idc.dtype(), [&](auto itag) {
      using I = decltype(itag);
      cpu::embedding_forward(idc.data<I>(), idc.numel(), w.data<T>(), hidden, out.data<T>());
    });
  });
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
