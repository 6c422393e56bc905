#include "ops/attention.h"

#include <cmath>

#include "kernels/cpu/attention.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

constexpr const char* kOp = "attention";

DType lse_dtype(DType dt) { return dt == DType::f64 ? DType::f64 : DType::f32; }

struct AttentionBackward : Node {
  Tensor q, k, v, out, lse;      // contiguous, detached
  std::vector<int64_t> seq_ids;  // [B, Tk] or empty
  cpu::AttentionShape shape;
  std::string name() const override { return "AttentionBackward"; }

  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(q.defined(), "AttentionBackward: saved tensors were already released (backward run twice?)");
    const Tensor& g = grads[0];
    if (!g.defined()) return {Tensor(), Tensor(), Tensor()};
    AM_CHECK(g.shape() == out.shape() && g.dtype() == out.dtype(), "attention backward: gradient ", g.describe(),
             " for an output ", out.describe());
    Tensor gc = contiguous(g.detach());
    const bool need_q = !next_edges.empty() && next_edges[0].fn != nullptr;
    const bool need_kv = next_edges.size() < 3 || next_edges[1].fn != nullptr || next_edges[2].fn != nullptr;
    Tensor dq = need_q ? Tensor::empty(q.shape(), q.dtype()) : Tensor();
    Tensor dk = need_kv ? Tensor::empty(k.shape(), k.dtype()) : Tensor();
    Tensor dv = need_kv ? Tensor::empty(v.shape(), v.dtype()) : Tensor();
    cpu::AttentionShape s = shape;
    s.seq_ids = seq_ids.empty() ? nullptr : seq_ids.data();
    dispatch_floating(q.dtype(), kOp, [&](auto tag) {
      using T = decltype(tag);
      using L = compute_t<T>;
      cpu::attention_backward(s, q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(), gc.data<T>(), lse.data<L>(),
                              need_q ? dq.data<T>() : nullptr, need_kv ? dk.data<T>() : nullptr,
                              need_kv ? dv.data<T>() : nullptr);
    });
    return {dq, dk, dv};
  }
  void release_saved() override {
    q = k = v = out = lse = Tensor();
    seq_ids.clear();
  }
};

std::vector<int64_t> read_seq_ids(const Tensor& ids, int64_t batch, int64_t kv_len) {
  check_cpu(ids, kOp);
  if (ids.dtype() != DType::i32 && ids.dtype() != DType::i64)
    throw Error(detail::str("attention: seq_ids must be i32 or i64, got ", ids.describe()), kOp,
                "pass integer sequence ids of shape [batch, kv_len]");
  if (ids.dim() != 2 || ids.size(0) != batch || ids.size(1) != kv_len)
    throw Error(detail::str("attention: seq_ids has shape ", shape_str(ids.shape()), ", expected [", batch, ", ",
                            kv_len, "] ([batch, kv_len] of k)"),
                kOp);
  Tensor c = contiguous(ids.detach());
  std::vector<int64_t> out(static_cast<size_t>(c.numel()));
  if (c.dtype() == DType::i32) {
    const int32_t* p = c.data<int32_t>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = p[i];
  } else {
    const int64_t* p = c.data<int64_t>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = p[i];
  }
  return out;
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& options) {
  check_defined(q, kOp, "q");
  check_defined(k, kOp, "k");
  check_defined(v, kOp, "v");
  check_cpu(q, kOp);
  check_cpu(k, kOp);
  check_cpu(v, kOp);
  check_same_dtype(q, k, kOp);
  check_same_dtype(q, v, kOp);
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    throw Error(detail::str("attention: q, k, v must be rank 4 ([batch, seq, heads, head_dim]), got q ", q.describe(),
                            ", k ", k.describe(), ", v ", v.describe()),
                kOp);
  const int64_t B = q.size(0), Tq = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t Tk = k.size(1), Hkv = k.size(2), Dv = v.size(3);
  auto shapes = [&] { return detail::str(" (q ", q.describe(), ", k ", k.describe(), ", v ", v.describe(), ")"); };
  if (k.size(0) != B || v.size(0) != B) throw Error(detail::str("attention: batch sizes differ", shapes()), kOp);
  if (v.size(1) != Tk || v.size(2) != Hkv)
    throw Error(detail::str("attention: k and v must have the same length and heads", shapes()), kOp);
  if (k.size(3) != D)
    throw Error(detail::str("attention: q and k head dims differ (", D, " vs ", k.size(3), ")", shapes()), kOp);
  if (D == 0 || Dv == 0) throw Error(detail::str("attention: empty head dim", shapes()), kOp);
  if (Hkv == 0 || Hq % Hkv != 0)
    throw Error(
        detail::str("attention: query heads (", Hq, ") must be a multiple of key/value heads (", Hkv, ")", shapes()),
        kOp);
  if (Tq > Tk)
    throw Error(detail::str("attention: more queries (", Tq, ") than keys (", Tk,
                            "); queries are the last Tq positions of the keys", shapes()),
                kOp);
  if (options.window < 0) throw Error(detail::str("attention: window must be >= 0, got ", options.window), kOp);
  if (!(options.softcap >= 0) || !std::isfinite(options.softcap))
    throw Error(detail::str("attention: softcap must be a finite value >= 0, got ", options.softcap), kOp);
  if (!std::isfinite(options.scale))
    throw Error(detail::str("attention: scale must be finite, got ", options.scale), kOp);

  std::vector<int64_t> ids;
  if (options.seq_ids.defined()) ids = read_seq_ids(options.seq_ids, B, Tk);

  cpu::AttentionShape s;
  s.batch = B;
  s.q_len = Tq;
  s.kv_len = Tk;
  s.q_heads = Hq;
  s.kv_heads = Hkv;
  s.head_dim = D;
  s.v_head_dim = Dv;
  s.scale = options.scale != 0 ? options.scale : 1.0 / std::sqrt(double(D));
  s.causal = options.causal;
  s.window = options.window;
  s.softcap = options.softcap;
  s.seq_ids = ids.empty() ? nullptr : ids.data();

  Tensor qc = contiguous(q), kc = contiguous(k), vc = contiguous(v);
  Tensor out = Tensor::empty({B, Tq, Hq, Dv}, q.dtype());
  Tensor lse = Tensor::empty({B, Hq, Tq}, lse_dtype(q.dtype()));
  dispatch_floating(q.dtype(), kOp, [&](auto tag) {
    using T = decltype(tag);
    using L = compute_t<T>;
    cpu::attention_forward(s, qc.data<T>(), kc.data<T>(), vc.data<T>(), out.data<T>(), lse.data<L>());
  });

  if (needs_grad(qc, kc, vc)) {
    auto node = std::make_shared<AttentionBackward>();
    node->q = qc.detach();
    node->k = kc.detach();
    node->v = vc.detach();
    node->out = out.detach();
    node->lse = lse;
    node->seq_ids = std::move(ids);
    node->shape = s;
    node->shape.seq_ids = nullptr;  // re-pointed at node->seq_ids in apply()
    record(node, {qc, kc, vc}, {out});
  }
  return out;
}

}  // namespace automodel::ops
