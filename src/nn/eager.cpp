#include "nn/eager.h"

#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "ops/activation.h"
#include "ops/binary.h"
#include "ops/cast.h"
#include "ops/concat.h"
#include "ops/matmul.h"
#include "ops/reduce.h"
#include "ops/softmax.h"
#include "ops/view.h"

namespace automodel::nn {

namespace {

DType compute_dtype(DType dt) { return dt == DType::f64 ? DType::f64 : DType::f32; }

// A constant (no gradient) of `shape` from doubles, in dtype.
Tensor constant(const std::vector<double>& values, const Shape& shape, DType dtype) {
  return Tensor::from_values(values, shape, dtype);
}

}  // namespace

Tensor rms_norm_eager(const Tensor& x, const Tensor& weight, double eps, bool unit_offset) {
  const DType cdt = compute_dtype(x.dtype());
  Tensor h = ops::to_dtype(x, cdt);
  Tensor var = ops::mean(ops::mul(h, h), {-1}, true);
  h = ops::mul(h, ops::rsqrt(ops::add(var, constant({eps}, {1}, cdt))));
  if (!weight.defined()) return ops::to_dtype(h, x.dtype());
  if (unit_offset)
    return ops::to_dtype(ops::mul(h, ops::add(ops::to_dtype(weight, cdt), constant({1.0}, {1}, cdt))), x.dtype());
  return ops::mul(weight, ops::to_dtype(h, x.dtype()));
}

Tensor rope_eager(const Tensor& x, const Tensor& position_ids, const Tensor& inv_freq, double attention_scaling) {
  AM_CHECK(x.dim() == 4, "rope_eager: x must be [B, T, H, D], got ", x.describe());
  const int64_t B = x.size(0), T = x.size(1), D = x.size(3), half = inv_freq.numel(), R = 2 * half;
  AM_CHECK(R <= D, "rope_eager: ", R, " rotary dims for head dim ", D);
  const int64_t pb = position_ids.dim() == 2 ? position_ids.size(0) : 1;
  AM_CHECK(position_ids.numel() == pb * T && (pb == 1 || pb == B), "rope_eager: position_ids ", position_ids.describe(),
           " for x ", x.describe());
  const std::vector<double> pos = position_ids.to_doubles(), freq = inv_freq.to_doubles();
  std::vector<double> cosv(size_t(pb * T * R)), sinv(size_t(pb * T * R));
  for (int64_t i = 0; i < pb * T; ++i)
    for (int64_t j = 0; j < R; ++j) {
      const float angle = float(pos[size_t(i)]) * float(freq[size_t(j % half)]);  // fp32, as transformers
      cosv[size_t(i * R + j)] = double(std::cos(angle) * float(attention_scaling));
      sinv[size_t(i * R + j)] = double(std::sin(angle) * float(attention_scaling));
    }
  const Tensor cos = constant(cosv, {pb, T, 1, R}, x.dtype()), sin = constant(sinv, {pb, T, 1, R}, x.dtype());
  const Tensor rot = R == D ? x : ops::narrow(x, 3, 0, R);
  const std::vector<Tensor> halves = ops::split(rot, {half, half}, 3);
  const Tensor rotated = ops::concat({ops::scale(halves[1], -1.0), halves[0]}, 3);  // rotate_half
  const Tensor out = ops::add(ops::mul(rot, cos), ops::mul(rotated, sin));
  return R == D ? out : ops::concat({out, ops::narrow(x, 3, R, D - R)}, 3);
}

Tensor attention_eager(const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttentionOptions& o) {
  AM_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention_eager: q, k, v must be rank 4, got ", q.describe(),
           ", ", k.describe(), ", ", v.describe());
  const int64_t B = q.size(0), Tq = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t Tk = k.size(1), Hkv = k.size(2), Dv = v.size(3);
  AM_CHECK(Hkv > 0 && Hq % Hkv == 0 && Tq <= Tk, "attention_eager: q ", q.describe(), " and k ", k.describe(),
           " do not fit");
  const int64_t G = Hq / Hkv, off = Tk - Tq;
  const double scale = o.scale != 0 ? o.scale : 1.0 / std::sqrt(double(D));

  // Query head h = hk * G + g: [B, Hq, Tq, D] viewed as [B, Hkv, G * Tq, D] meets its kv head directly.
  const Tensor qh = ops::reshape(ops::contiguous(ops::permute(q, {0, 2, 1, 3})), {B, Hkv, G * Tq, D});
  const Tensor kh = ops::permute(k, {0, 2, 1, 3}), vh = ops::permute(v, {0, 2, 1, 3});
  Tensor scores = ops::scale(ops::matmul(qh, kh, false, true), scale);
  if (o.softcap > 0) scores = ops::softcap(scores, o.softcap);

  std::vector<int64_t> ids;
  if (o.seq_ids.defined()) {
    for (double d : o.seq_ids.to_doubles()) ids.push_back(int64_t(d));
    AM_CHECK(int64_t(ids.size()) == B * Tk, "attention_eager: seq_ids ", o.seq_ids.describe(), " for ", B, " x ", Tk,
             " keys");
  }
  std::vector<int64_t> blocks;
  if (o.bidirectional_blocks.defined()) {
    for (double d : o.bidirectional_blocks.to_doubles()) blocks.push_back(int64_t(d));
    AM_CHECK(int64_t(blocks.size()) == B * Tk, "attention_eager: bidirectional_blocks ",
             o.bidirectional_blocks.describe(), " for ", B, " x ", Tk, " keys");
  }
  // A query sees a later key of its own block (transformers' blockwise_overlay OR'ed with the causal mask).
  auto same_block = [&](int64_t b, int64_t p, int64_t j) {
    return !blocks.empty() && blocks[size_t(b * Tk + p)] >= 0 &&
           blocks[size_t(b * Tk + p)] == blocks[size_t(b * Tk + j)];
  };
  const int64_t mb = ids.empty() && blocks.empty() ? 1 : B;
  std::vector<double> mask(size_t(mb * Tq * Tk), 0.0);
  const double masked = double(std::numeric_limits<float>::lowest());
  for (int64_t b = 0; b < mb; ++b)
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t j = 0; j < Tk; ++j) {
        const int64_t p = i + off;
        const bool ok = (!o.causal || j <= p || same_block(b, p, j)) && (o.window <= 0 || p - j < o.window) &&
                        (ids.empty() || ids[size_t(b * Tk + j)] == ids[size_t(b * Tk + p)]);
        if (!ok) mask[size_t((b * Tq + i) * Tk + j)] = masked;
      }
  const DType cdt = compute_dtype(q.dtype());
  scores = ops::reshape(ops::to_dtype(scores, cdt), {B, Hkv, G, Tq, Tk});
  scores = ops::add(scores, constant(mask, {mb, 1, 1, Tq, Tk}, cdt));
  Tensor weights;
  if (o.sinks.defined()) {
    // GptOss's eager_attention_forward: each head's sink is one more column of every row, dropped after softmax.
    AM_CHECK(o.sinks.dim() == 1 && o.sinks.size(0) == Hq, "attention_eager: sinks ", o.sinks.describe(), " for ", Hq,
             " heads");
    const Tensor column =
        ops::mul(Tensor::ones({B, Hkv, G, Tq, 1}, cdt), ops::reshape(ops::to_dtype(o.sinks, cdt), {1, Hkv, G, 1, 1}));
    weights = ops::narrow(ops::softmax(ops::concat({scores, column}, -1), -1), -1, 0, Tk);
  } else {
    weights = ops::softmax(scores, -1);
  }
  const Tensor probs = ops::reshape(ops::to_dtype(weights, q.dtype()), {B, Hkv, G * Tq, Tk});
  const Tensor out = ops::reshape(ops::matmul(probs, vh), {B, Hq, Tq, Dv});
  return ops::contiguous(ops::permute(out, {0, 2, 1, 3}));
}

}  // namespace automodel::nn
