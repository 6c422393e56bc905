#include "ops/attention.h"

#include <cmath>

#include "ops/backend.h"
#include "ops/cast.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

constexpr const char* kOp = "attention";

DType lse_dtype(DType dt) { return dt == DType::f64 ? DType::f64 : DType::f32; }

struct AttentionBackward : Node {
  Tensor q, k, v, out, lse;  // contiguous, detached
  Tensor seq_ids;            // [B, Tk] i64, contiguous; undefined without
  kernels::AttentionShape shape;
  std::string name() const override { return "AttentionBackward"; }

  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(q.defined(), "AttentionBackward: saved tensors were already released (backward run twice?)");
    const Tensor& g = grads[0];
    if (!g.defined()) return {Tensor(), Tensor(), Tensor()};
    AM_CHECK(g.shape() == out.shape() && g.dtype() == out.dtype(), "attention backward: gradient ", g.describe(),
             " for an output ", out.describe());
    Tensor gc = contiguous(g.detach());
    const kernels::Backend& be = backend_of(kOp, q, gc);
    const bool need_q = !next_edges.empty() && next_edges[0].fn != nullptr;
    const bool need_kv = next_edges.size() < 3 || next_edges[1].fn != nullptr || next_edges[2].fn != nullptr;
    Tensor dq = need_q ? Tensor::empty(q.shape(), q.dtype(), q.device()) : Tensor();
    Tensor dk = need_kv ? Tensor::empty(k.shape(), k.dtype(), k.device()) : Tensor();
    Tensor dv = need_kv ? Tensor::empty(v.shape(), v.dtype(), v.device()) : Tensor();
    kernels::AttentionShape s = shape;
    s.seq_ids = seq_ids.defined() ? seq_ids.data<int64_t>() : nullptr;
    be.attention_backward(q.dtype(), s, q.raw_data(), k.raw_data(), v.raw_data(), out.raw_data(), gc.raw_data(),
                          lse.raw_data(), need_q ? dq.raw_data() : nullptr, need_kv ? dk.raw_data() : nullptr,
                          need_kv ? dv.raw_data() : nullptr);
    return {dq, dk, dv};
  }
  void release_saved() override { q = k = v = out = lse = seq_ids = Tensor(); }
};

// The sequence ids as a contiguous i64 tensor (what the kernels read).
Tensor seq_ids_i64(const Tensor& ids, int64_t batch, int64_t kv_len) {
  if (ids.dtype() != DType::i32 && ids.dtype() != DType::i64)
    throw Error(detail::str("attention: seq_ids must be i32 or i64, got ", ids.describe()), kOp,
                "pass integer sequence ids of shape [batch, kv_len]");
  if (ids.dim() != 2 || ids.size(0) != batch || ids.size(1) != kv_len)
    throw Error(detail::str("attention: seq_ids has shape ", shape_str(ids.shape()), ", expected [", batch, ", ",
                            kv_len, "] ([batch, kv_len] of k)"),
                kOp);
  NoGradGuard no_grad;
  Tensor c = to_dtype(ids.detach(), DType::i64);
  // A copy of its own: the backward reads the ids again, after the caller may have reused its tensor.
  return c.storage() == ids.storage() ? clone(c) : c;
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& options) {
  check_defined(q, kOp, "q");
  check_defined(k, kOp, "k");
  check_defined(v, kOp, "v");
  const kernels::Backend& be = backend_of(kOp, q, k, v, options.seq_ids);
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
  if (options.bidirectional_blocks.defined())
    throw Error("attention: the tiled kernel does not support bidirectional_blocks", kOp,
                "use the materialised attention (nn::attention_eager) for bidirectional blocks");

  Tensor ids;
  if (options.seq_ids.defined()) ids = seq_ids_i64(options.seq_ids, B, Tk);

  kernels::AttentionShape s;
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
  s.seq_ids = ids.defined() ? ids.data<int64_t>() : nullptr;

  dispatch_floating(q.dtype(), kOp, [](auto) {});
  Tensor qc = contiguous(q), kc = contiguous(k), vc = contiguous(v);
  Tensor out = Tensor::empty({B, Tq, Hq, Dv}, q.dtype(), q.device());
  Tensor lse = Tensor::empty({B, Hq, Tq}, lse_dtype(q.dtype()), q.device());
  be.attention_forward(q.dtype(), s, qc.raw_data(), kc.raw_data(), vc.raw_data(), out.raw_data(), lse.raw_data());

  if (needs_grad(qc, kc, vc)) {
    auto node = std::make_shared<AttentionBackward>();
    node->q = qc.detach();
    node->k = kc.detach();
    node->v = vc.detach();
    node->out = out.detach();
    node->lse = lse;
    node->seq_ids = ids;
    node->shape = s;
    node->shape.seq_ids = nullptr;  // re-pointed at node->seq_ids in apply()
    record(node, {qc, kc, vc}, {out});
  }
  return out;
}

}  // namespace automodel::ops
