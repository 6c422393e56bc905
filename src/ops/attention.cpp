#include "ops/attention.h"

#include <algorithm>
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
  Tensor horizons;           // [B, Tk] i64, contiguous; undefined without bidirectional blocks
  Tensor sinks;              // [Hq] in lse's dtype, contiguous; undefined without sinks
  DType sinks_dtype = DType::f32;
  kernels::AttentionShape shape;
  std::string name() const override { return "AttentionBackward"; }

  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(q.defined(), "AttentionBackward: saved tensors were already released (backward run twice?)");
    const Tensor& g = grads[0];
    if (!g.defined()) return {Tensor(), Tensor(), Tensor(), Tensor()};
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
    s.horizons = horizons.defined() ? horizons.data<int64_t>() : nullptr;
    const bool need_sinks = next_edges.size() > 3 && next_edges[3].fn != nullptr;
    Tensor dsinks = need_sinks ? Tensor::empty(sinks.shape(), sinks.dtype(), sinks.device()) : Tensor();
    s.sinks = sinks.defined() ? sinks.raw_data() : nullptr;
    s.dsinks = need_sinks ? dsinks.raw_data() : nullptr;
    be.attention_backward(q.dtype(), s, q.raw_data(), k.raw_data(), v.raw_data(), out.raw_data(), gc.raw_data(),
                          lse.raw_data(), need_q ? dq.raw_data() : nullptr, need_kv ? dk.raw_data() : nullptr,
                          need_kv ? dv.raw_data() : nullptr);
    if (need_sinks) dsinks = to_dtype(dsinks, sinks_dtype);
    return {dq, dk, dv, dsinks};
  }
  void release_saved() override { q = k = v = out = lse = seq_ids = horizons = sinks = Tensor(); }
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

// The kernels' horizons from bidirectional block ids: the last position of a position's block (itself outside
// any). Each block must be one run of positions, so that a query's visible keys stay a prefix of the row.
Tensor horizons_of_blocks(const Tensor& blocks, int64_t batch, int64_t kv_len) {
  if (blocks.dtype() != DType::i32 && blocks.dtype() != DType::i64)
    throw Error(detail::str("attention: bidirectional_blocks must be i32 or i64, got ", blocks.describe()), kOp,
                "pass integer block ids of shape [batch, kv_len] (-1 outside blocks)");
  if (blocks.dim() != 2 || blocks.size(0) != batch || blocks.size(1) != kv_len)
    throw Error(detail::str("attention: bidirectional_blocks has shape ", shape_str(blocks.shape()), ", expected [",
                            batch, ", ", kv_len, "] ([batch, kv_len] of k)"),
                kOp);
  const std::vector<double> ids = blocks.to_doubles();
  std::vector<int64_t> out(ids.size());
  for (int64_t b = 0; b < batch; ++b) {
    const double* row = ids.data() + b * kv_len;
    std::vector<double> finished;  // blocks already closed in this row
    for (int64_t p = 0; p < kv_len;) {
      int64_t end = p + 1;
      if (row[p] >= 0) {
        if (std::find(finished.begin(), finished.end(), row[p]) != finished.end())
          throw Error(detail::str("attention: bidirectional block ", row[p], " of batch row ", b,
                                  " is not one contiguous run of positions (it resumes at position ", p, ")"),
                      kOp, "give each block (one image's tokens) its own id");
        while (end < kv_len && row[end] == row[p]) ++end;
        finished.push_back(row[p]);
      }
      for (int64_t i = p; i < end; ++i) out[size_t(b * kv_len + i)] = row[p] >= 0 ? end - 1 : i;
      p = end;
    }
  }
  return Tensor::from_vector(out, {batch, kv_len});
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& options) {
  check_defined(q, kOp, "q");
  check_defined(k, kOp, "k");
  check_defined(v, kOp, "v");
  const kernels::Backend& be = backend_of(kOp, q, k, v, options.seq_ids, options.sinks);
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

  Tensor sinks;  // in lse's dtype, as the kernels read them
  if (options.sinks.defined()) {
    const Tensor& given = options.sinks;
    if (!is_floating(given.dtype()) || given.dim() != 1 || given.size(0) != Hq)
      throw Error(detail::str("attention: sinks must be a floating [", Hq, "] tensor (one logit per query head), got ",
                              given.describe()),
                  kOp, "give self_attn.sinks one entry per attention head");
    NoGradGuard no_grad;
    sinks = contiguous(to_dtype(given.detach(), lse_dtype(q.dtype())));
    if (sinks.storage() == given.storage()) sinks = clone(sinks);  // the backward reads them after the caller
  }
  Tensor ids, horizons;
  if (options.seq_ids.defined()) ids = seq_ids_i64(options.seq_ids, B, Tk);
  if (options.bidirectional_blocks.defined() && options.causal)
    horizons = horizons_of_blocks(options.bidirectional_blocks, B, Tk);

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
  s.horizons = horizons.defined() ? horizons.data<int64_t>() : nullptr;
  s.sinks = sinks.defined() ? sinks.raw_data() : nullptr;

  dispatch_floating(q.dtype(), kOp, [](auto) {});
  Tensor qc = contiguous(q), kc = contiguous(k), vc = contiguous(v);
  Tensor out = Tensor::empty({B, Tq, Hq, Dv}, q.dtype(), q.device());
  Tensor lse = Tensor::empty({B, Hq, Tq}, lse_dtype(q.dtype()), q.device());
  be.attention_forward(q.dtype(), s, qc.raw_data(), kc.raw_data(), vc.raw_data(), out.raw_data(), lse.raw_data());

  const Tensor sinks_input = options.sinks.defined() ? options.sinks : Tensor();
  if (needs_grad(qc, kc, vc) || (sinks_input.defined() && needs_grad(sinks_input))) {
    auto node = std::make_shared<AttentionBackward>();
    node->q = qc.detach();
    node->k = kc.detach();
    node->v = vc.detach();
    node->out = out.detach();
    node->lse = lse;
    node->seq_ids = ids;
    node->horizons = horizons;
    node->sinks = sinks;
    if (sinks_input.defined()) node->sinks_dtype = sinks_input.dtype();
    node->shape = s;
    node->shape.seq_ids = nullptr;  // re-pointed at node->seq_ids / horizons / sinks in apply()
    node->shape.horizons = nullptr;
    node->shape.sinks = nullptr;
    record(node, {qc, kc, vc, sinks_input}, {out});
  }
  return out;
}

}  // namespace automodel::ops
