// Cases of backend_ops_test.cpp for the table's rope, attention, lookup, dropout, product and loss entries.
#include <cmath>
#include <limits>

#include "backend_ops_cases.h"
#include "core/rng.h"

namespace automodel::backend_test {

namespace {

const std::vector<DType> kFloating{DType::f32, DType::f64, DType::bf16};

// A matrix product over row-major [m, k] and [k, n] operands read through op(): C = op(A) op(B).
std::vector<double> matmul_ref(const std::vector<double>& a, bool ta, const std::vector<double>& b, bool tb, int64_t m,
                               int64_t n, int64_t k) {
  std::vector<double> c(size_t(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p)
        s += a[size_t(ta ? p * m + i : i * k + p)] * b[size_t(tb ? j * k + p : p * n + j)];
      c[size_t(i * n + j)] = s;
    }
  return c;
}

// Whether dropout keeps element i of a mask drawn from (seed, first_block) with drop probability p.
bool kept(int64_t i, double p, uint64_t seed, uint64_t first_block) {
  const uint32_t r = philox4x32(seed, first_block + uint64_t(i / 4))[size_t(i % 4)];
  return uint32_to_unit_float(r) >= p;
}

std::vector<double> dropped(std::vector<double> x, double p, uint64_t seed, uint64_t first_block) {
  for (size_t i = 0; i < x.size(); ++i) x[i] = kept(int64_t(i), p, seed, first_block) ? x[i] / (1 - p) : 0.0;
  return x;
}

void rope_cases(std::vector<Case>& cases) {
  // [2, 3, 2, 10] with R = 8 rotated dims (2 passed through), position ids per batch.
  for (bool backward : {false, true}) {
    const std::string kernel = backward ? "rope_backward" : "rope_forward";
    cases.push_back({kernel, kFloating, [=](const Target& t, DType dt) {
                       std::vector<Check> checks;
                       for (bool interleaved : {false, true}) {
                         Random r(kernel);
                         kernels::RopeParams p;
                         p.batch = 2, p.seq = 3, p.heads = 2, p.head_dim = 10, p.half_rot = 4;
                         p.pos_batch_stride = 3, p.interleaved = interleaved, p.attention_scaling = 1.25;
                         const int64_t n = p.batch * p.seq * p.heads * p.head_dim;
                         const std::vector<double> x = r.values(n, dt), pos = r.integers(6, 0, 40);
                         const std::vector<double> freq = rounded(r.values(4, DType::f32, 0.01, 1), DType::f32);
                         Tensor tx = upload(t, x, dt), tp = upload(t, pos, DType::i64),
                                tf = upload(t, freq, DType::f32);
                         Tensor y = output(t, n, dt);
                         (backward ? t.backend->rope_backward : t.backend->rope_forward)(
                             dt, tx.raw_data(), y.raw_data(), tp.data<int64_t>(), tf.data<float>(), p);
                         std::vector<double> want(static_cast<size_t>(n));
                         for (int64_t row = 0; row < p.batch * p.seq; ++row)
                           for (int64_t h = 0; h < p.heads; ++h) {
                             const int64_t base = (row * p.heads + h) * p.head_dim;
                             for (int64_t i = 0; i < p.half_rot; ++i) {
                               const double angle = double(float(pos[size_t(row)]) * float(freq[size_t(i)]));
                               const double c = std::cos(angle) * p.attention_scaling;
                               const double s = std::sin(angle) * p.attention_scaling * (backward ? -1 : 1);
                               const int64_t i1 = base + (interleaved ? 2 * i : i);
                               const int64_t i2 = base + (interleaved ? 2 * i + 1 : i + p.half_rot);
                               want[size_t(i1)] = x[size_t(i1)] * c - x[size_t(i2)] * s;
                               want[size_t(i2)] = x[size_t(i2)] * c + x[size_t(i1)] * s;
                             }
                             for (int64_t d = 2 * p.half_rot; d < p.head_dim; ++d)
                               want[size_t(base + d)] = x[size_t(base + d)];
                           }
                         checks.push_back({interleaved ? "interleaved" : "halves", download(y), want, tolerance(dt)});
                       }
                       return checks;
                     }});
  }
}

struct AttentionRef {
  std::vector<double> out, lse, dq, dk, dv, dsinks;
};

// Attention as attention.h defines it, one query row at a time with the full score row, and its gradients.
AttentionRef attention_ref(const kernels::AttentionShape& s, const std::vector<double>& q, const std::vector<double>& k,
                           const std::vector<double>& v, const std::vector<double>& ids,
                           const std::vector<double>& dout, const std::vector<double>& sinks) {
  const int64_t B = s.batch, Tq = s.q_len, Tk = s.kv_len, Hq = s.q_heads, Hkv = s.kv_heads;
  const int64_t D = s.head_dim, Dv = s.v_head_dim;
  AttentionRef r;
  r.out.assign(size_t(B * Tq * Hq * Dv), 0.0);
  r.lse.assign(size_t(B * Hq * Tq), 0.0);
  r.dq.assign(q.size(), 0.0);
  r.dk.assign(k.size(), 0.0);
  r.dv.assign(v.size(), 0.0);
  r.dsinks.assign(sinks.size(), 0.0);
  auto qi = [&](int64_t b, int64_t i, int64_t h, int64_t d) { return size_t(((b * Tq + i) * Hq + h) * D + d); };
  auto ki = [&](int64_t b, int64_t j, int64_t h, int64_t d) { return size_t(((b * Tk + j) * Hkv + h) * D + d); };
  auto vi = [&](int64_t b, int64_t j, int64_t h, int64_t d) { return size_t(((b * Tk + j) * Hkv + h) * Dv + d); };
  auto oi = [&](int64_t b, int64_t i, int64_t h, int64_t d) { return size_t(((b * Tq + i) * Hq + h) * Dv + d); };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t kh = h / (Hq / Hkv), qp = i + Tk - Tq;
        std::vector<double> score(static_cast<size_t>(Tk)), raw(static_cast<size_t>(Tk)), prob(size_t(Tk), 0.0);
        std::vector<bool> on(static_cast<size_t>(Tk));
        // A sink is one more score in the softmax, with no value.
        const double sink = sinks.empty() ? -INFINITY : sinks[size_t(h)];
        double m = sink;
        for (int64_t j = 0; j < Tk; ++j) {
          on[size_t(j)] = (!s.causal || j <= qp) && (s.window <= 0 || qp - j < s.window) &&
                          (ids.empty() || ids[size_t(b * Tk + j)] == ids[size_t(b * Tk + qp)]);
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += q[qi(b, i, h, d)] * k[ki(b, j, kh, d)];
          raw[size_t(j)] = s.scale * dot;
          score[size_t(j)] = s.softcap > 0 ? s.softcap * std::tanh(raw[size_t(j)] / s.softcap) : raw[size_t(j)];
          if (on[size_t(j)]) m = std::max(m, score[size_t(j)]);
        }
        double l = sinks.empty() ? 0 : std::exp(sink - m);
        for (int64_t j = 0; j < Tk; ++j)
          if (on[size_t(j)]) l += std::exp(score[size_t(j)] - m);
        const double lse = l > 0 ? m + std::log(l) : INFINITY;
        r.lse[size_t((b * Hq + h) * Tq + i)] = lse;
        if (l == 0) continue;  // every key masked: zero output and gradients
        for (int64_t j = 0; j < Tk; ++j)
          if (on[size_t(j)]) prob[size_t(j)] = std::exp(score[size_t(j)] - m) / l;
        for (int64_t d = 0; d < Dv; ++d) {
          double o = 0;
          for (int64_t j = 0; j < Tk; ++j) o += prob[size_t(j)] * v[vi(b, j, kh, d)];
          r.out[oi(b, i, h, d)] = o;
        }
        if (dout.empty()) continue;
        double delta = 0;  // sum_d dout * out
        for (int64_t d = 0; d < Dv; ++d) delta += dout[oi(b, i, h, d)] * r.out[oi(b, i, h, d)];
        if (!sinks.empty()) r.dsinks[size_t(h)] -= std::exp(sink - lse) * delta;
        for (int64_t j = 0; j < Tk; ++j) {
          if (!on[size_t(j)]) continue;
          double dp = 0;
          for (int64_t d = 0; d < Dv; ++d) {
            dp += dout[oi(b, i, h, d)] * v[vi(b, j, kh, d)];
            r.dv[vi(b, j, kh, d)] += prob[size_t(j)] * dout[oi(b, i, h, d)];
          }
          double ds = prob[size_t(j)] * (dp - delta);
          if (s.softcap > 0) {
            const double th = std::tanh(raw[size_t(j)] / s.softcap);
            ds *= 1 - th * th;
          }
          for (int64_t d = 0; d < D; ++d) {
            r.dq[qi(b, i, h, d)] += s.scale * ds * k[ki(b, j, kh, d)];
            r.dk[ki(b, j, kh, d)] += s.scale * ds * q[qi(b, i, h, d)];
          }
        }
      }
  return r;
}

// The shapes the attention cases run: a causal square one long enough for the bf16 tile kernels, and a short one
// with every option (fewer queries than keys, a window, soft-capping, sequence ids with a fully masked row).
std::vector<kernels::AttentionShape> attention_shapes() {
  kernels::AttentionShape a;
  a.batch = 2, a.q_len = 70, a.kv_len = 70, a.q_heads = 4, a.kv_heads = 2, a.head_dim = 16, a.v_head_dim = 16;
  a.scale = 0.25;
  kernels::AttentionShape b;
  b.batch = 2, b.q_len = 5, b.kv_len = 9, b.q_heads = 2, b.kv_heads = 1, b.head_dim = 8, b.v_head_dim = 12;
  b.scale = 0.3, b.window = 4, b.softcap = 2.0;
  return {a, b};
}

std::vector<double> attention_ids(const kernels::AttentionShape& s) {
  if (s.window == 0) return {};
  // Sequences [0 0 0 1 1 1 2 2 3]; in batch 1 the last key is alone in its sequence and outside the window of
  // nothing, and the query at position 4 sees only keys of sequence 1 within the window.
  std::vector<double> ids;
  for (int64_t b = 0; b < s.batch; ++b)
    for (double id : {0, 0, 0, 1, 1, 1, 2, 2, 3}) ids.push_back(id);
  return ids;
}

void attention_cases(std::vector<Case>& cases) {
  for (bool backward : {false, true}) {
    const std::string kernel = backward ? "attention_backward" : "attention_forward";
    cases.push_back(
        {kernel, kFloating, [=](const Target& t, DType dt) {
           std::vector<Check> checks;
           int shape_nr = 0;
           // Each shape plain, then with attention sinks (which change every lse and take a gradient).
           std::vector<std::pair<kernels::AttentionShape, bool>> runs;
           for (bool with_sinks : {false, true})
             for (const kernels::AttentionShape& s : attention_shapes()) runs.emplace_back(s, with_sinks);
           for (auto [s, with_sinks] : runs) {
             Random r(kernel);
             const std::string tag = " shape " + std::to_string(shape_nr++) + (with_sinks ? " with sinks" : "");
             const int64_t nq = s.batch * s.q_len * s.q_heads * s.head_dim;
             const int64_t nk = s.batch * s.kv_len * s.kv_heads * s.head_dim;
             const int64_t nv = s.batch * s.kv_len * s.kv_heads * s.v_head_dim;
             const int64_t no = s.batch * s.q_len * s.q_heads * s.v_head_dim;
             const int64_t nl = s.batch * s.q_heads * s.q_len;
             const std::vector<double> q = r.values(nq, dt), k = r.values(nk, dt), v = r.values(nv, dt);
             const std::vector<double> dout = r.values(no, dt), ids = attention_ids(s);
             Tensor tq = upload(t, q, dt), tk = upload(t, k, dt), tv = upload(t, v, dt);
             Tensor tids = upload(t, ids, DType::i64);
             s.seq_ids = ids.empty() ? nullptr : tids.data<int64_t>();
             const std::vector<double> sinks =
                 with_sinks ? rounded(r.values(s.q_heads, DType::f32, -1, 3), stat_dtype(dt)) : std::vector<double>{};
             Tensor tsinks = upload(t, sinks, stat_dtype(dt));
             s.sinks = with_sinks ? tsinks.raw_data() : nullptr;
             const AttentionRef want = attention_ref(s, q, k, v, ids, backward ? dout : std::vector<double>{}, sinks);
             if (!backward) {
               Tensor out = output(t, no, dt), lse = output(t, nl, stat_dtype(dt));
               t.backend->attention_forward(dt, s, tq.raw_data(), tk.raw_data(), tv.raw_data(), out.raw_data(),
                                            lse.raw_data());
               checks.push_back({"out" + tag, download(out), want.out, tolerance(dt)});
               checks.push_back({"lse" + tag, download(lse), want.lse, tolerance(dt)});
               continue;
             }
             // The backward reads the forward's output and lse as the forward stored them.
             Tensor to = upload(t, rounded(want.out, dt), dt);
             Tensor tl = upload(t, rounded(want.lse, stat_dtype(dt)), stat_dtype(dt));
             Tensor tg = upload(t, dout, dt);
             Tensor dq = output(t, nq, dt), dk = output(t, nk, dt), dv = output(t, nv, dt);
             Tensor dsinks = output(t, s.q_heads, stat_dtype(dt));
             s.dsinks = with_sinks ? dsinks.raw_data() : nullptr;
             t.backend->attention_backward(dt, s, tq.raw_data(), tk.raw_data(), tv.raw_data(), to.raw_data(),
                                           tg.raw_data(), tl.raw_data(), dq.raw_data(), dk.raw_data(), dv.raw_data());
             checks.push_back({"dq" + tag, download(dq), want.dq, tolerance(dt)});
             checks.push_back({"dk" + tag, download(dk), want.dk, tolerance(dt)});
             checks.push_back({"dv" + tag, download(dv), want.dv, tolerance(dt)});
             if (with_sinks) checks.push_back({"dsinks" + tag, download(dsinks), want.dsinks, 4 * tolerance(dt)});
             s.dsinks = nullptr;
             // dq alone (dk, dv not wanted), then dk and dv alone.
             Tensor dq_only = output(t, nq, dt), dk_only = output(t, nk, dt), dv_only = output(t, nv, dt);
             t.backend->attention_backward(dt, s, tq.raw_data(), tk.raw_data(), tv.raw_data(), to.raw_data(),
                                           tg.raw_data(), tl.raw_data(), dq_only.raw_data(), nullptr, nullptr);
             t.backend->attention_backward(dt, s, tq.raw_data(), tk.raw_data(), tv.raw_data(), to.raw_data(),
                                           tg.raw_data(), tl.raw_data(), nullptr, dk_only.raw_data(),
                                           dv_only.raw_data());
             checks.push_back({"dq alone" + tag, download(dq_only), want.dq, tolerance(dt)});
             checks.push_back({"dk alone" + tag, download(dk_only), want.dk, tolerance(dt)});
             checks.push_back({"dv alone" + tag, download(dv_only), want.dv, tolerance(dt)});
           }
           return checks;
         }});
  }
}

void lookup_cases(std::vector<Case>& cases) {
  const std::vector<DType> index_types{DType::i32, DType::i64};
  cases.push_back(
      {"first_bad_index", {DType::i32, DType::i64}, [](const Target& t, DType it) {
         std::vector<double> ids{3, 0, 9, 4, 12, -1, 2};
         Tensor tids = upload(t, ids, it);
         int64_t value = 0;
         const double bad = double(t.backend->first_bad_index(it, tids.raw_data(), 7, 10, &value));
         int64_t none_value = 0;
         const double none = double(t.backend->first_bad_index(it, tids.raw_data(), 4, 10, &none_value));
         return std::vector<Check>{{"position", {bad, double(value)}, {4, 12}, 0}, {"all valid", {none}, {-1}, 0}};
       }});
  const int64_t vocab = 11, hidden = 19, n = 13;
  cases.push_back({"embedding_forward", kFloating, [=](const Target& t, DType dt) {
                     std::vector<Check> checks;
                     for (DType it : index_types) {
                       Random r("embedding_forward");
                       const std::vector<double> ids = r.integers(n, 0, vocab - 1), w = r.values(vocab * hidden, dt);
                       Tensor tids = upload(t, ids, it), tw = upload(t, w, dt), out = output(t, n * hidden, dt);
                       t.backend->embedding_forward(it, dt, tids.raw_data(), n, tw.raw_data(), hidden, out.raw_data());
                       std::vector<double> want;
                       for (double id : ids)
                         for (int64_t h = 0; h < hidden; ++h) want.push_back(w[size_t(int64_t(id) * hidden + h)]);
                       checks.push_back({dtype_name(it), download(out), want, 0});
                     }
                     return checks;
                   }});
  cases.push_back({"embedding_backward", kFloating, [=](const Target& t, DType dt) {
                     std::vector<Check> checks;
                     for (DType it : index_types) {
                       Random r("embedding_backward");
                       const std::vector<double> ids = r.integers(n, 0, vocab - 1), g = r.values(n * hidden, dt);
                       const int64_t padding = int64_t(ids[2]);
                       Tensor tids = upload(t, ids, it), tg = upload(t, g, dt), dw = output(t, vocab * hidden, dt);
                       t.backend->embedding_backward(it, dt, tids.raw_data(), n, tg.raw_data(), vocab, hidden, padding,
                                                     dw.raw_data());
                       std::vector<double> want(size_t(vocab * hidden), 0.0);
                       for (int64_t i = 0; i < n; ++i)
                         if (int64_t(ids[size_t(i)]) != padding)
                           for (int64_t h = 0; h < hidden; ++h)
                             want[size_t(int64_t(ids[size_t(i)]) * hidden + h)] += g[size_t(i * hidden + h)];
                       checks.push_back({dtype_name(it), download(dw), want, tolerance(dt)});
                     }
                     return checks;
                   }});
  // Pieces [2, 3, 4], [2, 1, 4], [2, 5, 4] along dim 1.
  const std::vector<int64_t> sizes{3, 1, 5};
  cases.push_back({"concat_forward", kFloating, [=](const Target& t, DType dt) {
                     Random r("concat_forward");
                     std::vector<std::vector<double>> pieces;
                     std::vector<Tensor> bufs;
                     std::vector<const void*> ptrs;
                     for (int64_t s : sizes) {
                       pieces.push_back(r.values(2 * s * 4, dt));
                       bufs.push_back(upload(t, pieces.back(), dt));
                       ptrs.push_back(bufs.back().raw_data());
                     }
                     Tensor out = output(t, 2 * 9 * 4, dt);
                     t.backend->concat_forward(ptrs.data(), sizes.data(), 3, out.raw_data(), 2, 4, dtype_size(dt));
                     std::vector<double> want;
                     for (int64_t o = 0; o < 2; ++o)
                       for (size_t p = 0; p < 3; ++p)
                         for (int64_t e = 0; e < sizes[p] * 4; ++e)
                           want.push_back(pieces[p][size_t(o * sizes[p] * 4 + e)]);
                     return std::vector<Check>{{"joined", download(out), want, 0}};
                   }});
  cases.push_back(
      {"concat_backward", kFloating, [=](const Target& t, DType dt) {
         Random r("concat_backward");
         const std::vector<double> joined = r.values(2 * 9 * 4, dt);
         Tensor src = upload(t, joined, dt), first = output(t, 2 * 3 * 4, dt), last = output(t, 2 * 5 * 4, dt);
         void* dsts[] = {first.raw_data(), nullptr, last.raw_data()};  // the middle piece not wanted
         t.backend->concat_backward(src.raw_data(), sizes.data(), 3, dsts, 2, 4, dtype_size(dt));
         std::vector<double> want_first, want_last;
         for (int64_t o = 0; o < 2; ++o)
           for (int64_t c = 0; c < 9; ++c)
             for (int64_t e = 0; e < 4; ++e) {
               const double x = joined[size_t((o * 9 + c) * 4 + e)];
               if (c < 3) want_first.push_back(x);
               if (c >= 4) want_last.push_back(x);
             }
         return std::vector<Check>{{"first", download(first), want_first, 0}, {"last", download(last), want_last, 0}};
       }});
  // x [4, 6] gathered along dim 1 by an index [3, 5] (smaller than x in dim 0), and the scatter-add back.
  cases.push_back({"gather_forward", kFloating, [](const Target& t, DType dt) {
                     Random r("gather_forward");
                     const std::vector<double> x = r.values(24, dt), index = r.integers(15, 0, 5);
                     const int64_t xs[] = {6, 1}, shape[] = {3, 5};
                     Tensor tx = upload(t, x, dt), ti = upload(t, index, DType::i64), out = output(t, 15, dt);
                     t.backend->gather_forward(tx.raw_data(), xs, ti.data<int64_t>(), out.raw_data(), shape, 2, 1,
                                               dtype_size(dt));
                     std::vector<double> want(15);
                     for (int64_t i = 0; i < 3; ++i)
                       for (int64_t j = 0; j < 5; ++j)
                         want[size_t(i * 5 + j)] = x[size_t(i * 6 + int64_t(index[size_t(i * 5 + j)]))];
                     return std::vector<Check>{{"out", download(out), want, 0}};
                   }});
  cases.push_back({"gather_backward", kFloating, [](const Target& t, DType dt) {
                     Random r("gather_backward");
                     const std::vector<double> g = r.values(15, dt), index = r.integers(15, 0, 2);  // repeats
                     const int64_t gxs[] = {6, 1}, shape[] = {3, 5};
                     Tensor tg = upload(t, g, dt), ti = upload(t, index, DType::i64), gx = output(t, 24, dt);
                     t.backend->gather_backward(dt, tg.raw_data(), ti.data<int64_t>(), gx.raw_data(), gxs, 24, shape, 2,
                                                1);
                     std::vector<double> want(24, 0.0);
                     for (int64_t i = 0; i < 3; ++i)
                       for (int64_t j = 0; j < 5; ++j)
                         want[size_t(i * 6 + int64_t(index[size_t(i * 5 + j)]))] += g[size_t(i * 5 + j)];
                     return std::vector<Check>{{"gx", download(gx), want, tolerance(dt)}};
                   }});
}

void dropout_cases(std::vector<Case>& cases) {
  for (bool backward : {false, true}) {
    const std::string kernel = backward ? "dropout_backward" : "dropout_forward";
    cases.push_back({kernel, kFloating, [=](const Target& t, DType dt) {
                       Random r(kernel);
                       const int64_t n = 1031;  // several mask chunks' worth of blocks, with a tail
                       const double p = 0.3;
                       const uint64_t seed = 1234, first_block = 77;
                       const std::vector<double> x = r.values(n, dt);
                       Tensor tx = upload(t, x, dt), y = output(t, n, dt);
                       (backward ? t.backend->dropout_backward : t.backend->dropout_forward)(
                           dt, tx.raw_data(), y.raw_data(), n, p, seed, first_block);
                       return std::vector<Check>{{"y", download(y), dropped(x, p, seed, first_block), tolerance(dt)}};
                     }});
  }
}

// The GEMM type pairs of an element type: dt / dt, and for bf16 also bf16 / f32.
std::vector<DType> gemm_outputs(DType dt) {
  return dt == DType::bf16 ? std::vector<DType>{DType::bf16, DType::f32} : std::vector<DType>{dt};
}

void product_cases(std::vector<Case>& cases) {
  const int64_t M = 5, N = 7, K = 9;
  cases.push_back(
      {"gemm", kFloating, [=](const Target& t, DType dt) {
         std::vector<Check> checks;
         for (DType odt : gemm_outputs(dt))
           for (int flags = 0; flags < 4; ++flags) {
             const bool ta = flags & 1, tb = flags & 2;
             Random r("gemm");
             const std::vector<double> a = r.values(M * K, dt), b = r.values(K * N, dt);
             const std::vector<double> bias = r.values(N, dt), c0 = r.values(M * N, odt);
             Tensor A = upload(t, a, dt), B = upload(t, b, dt), tbias = upload(t, bias, dt);
             const int64_t lda = ta ? M : K, ldb = tb ? K : N;
             // alpha 1, beta 0, with a bias; then alpha 0.5, beta 1 onto C's contents.
             Tensor C1 = output(t, M * N, odt), C2 = upload(t, c0, odt);
             t.backend->gemm(dt, odt, ta, tb, M, N, K, 1.0, A.raw_data(), lda, B.raw_data(), ldb, 0.0, C1.raw_data(), N,
                             tbias.raw_data());
             t.backend->gemm(dt, odt, ta, tb, M, N, K, 0.5, A.raw_data(), lda, B.raw_data(), ldb, 1.0, C2.raw_data(), N,
                             nullptr);
             const std::vector<double> ab = matmul_ref(a, ta, b, tb, M, N, K);
             std::vector<double> want1(ab.size()), want2(ab.size());
             for (size_t i = 0; i < ab.size(); ++i) {
               want1[i] = ab[i] + bias[i % size_t(N)];
               want2[i] = 0.5 * ab[i] + c0[i];
             }
             const std::string tag = std::string(ta ? "T" : "N") + (tb ? "T" : "N") + " -> " + dtype_name(odt);
             checks.push_back({"bias " + tag, download(C1), want1, tolerance(odt == dt ? dt : DType::bf16)});
             checks.push_back({"accumulate " + tag, download(C2), want2, tolerance(dt)});
           }
         return checks;
       }});
  cases.push_back({"gemm_batched", kFloating, [=](const Target& t, DType dt) {
                     // 3 products: A matrices 0, 1, 0 (a broadcast one), B matrices 2, 1, 0, C matrices 0, 1, 2.
                     std::vector<Check> checks;
                     for (DType odt : gemm_outputs(dt)) {
                       Random r("gemm_batched");
                       const std::vector<double> a = r.values(2 * M * K, dt), b = r.values(3 * K * N, dt);
                       Tensor A = upload(t, a, dt), B = upload(t, b, dt), C = output(t, 3 * M * N, odt);
                       const int64_t a_off[] = {0, M * K, 0}, b_off[] = {2 * K * N, K * N, 0};
                       const int64_t c_off[] = {0, M * N, 2 * M * N};
                       t.backend->gemm_batched(dt, odt, false, false, M, N, K, 1.0, A.raw_data(), a_off, K,
                                               B.raw_data(), b_off, N, 0.0, C.raw_data(), c_off, N, 3);
                       std::vector<double> want;
                       for (int i = 0; i < 3; ++i) {
                         const std::vector<double> ai(a.begin() + a_off[i], a.begin() + a_off[i] + M * K);
                         const std::vector<double> bi(b.begin() + b_off[i], b.begin() + b_off[i] + K * N);
                         const std::vector<double> ci = matmul_ref(ai, false, bi, false, M, N, K);
                         want.insert(want.end(), ci.begin(), ci.end());
                       }
                       checks.push_back({std::string("-> ") + dtype_name(odt), download(C), want, tolerance(dt)});
                     }
                     return checks;
                   }});
  cases.push_back({"column_sums", kFloating, [](const Target& t, DType dt) {
                     // x [6, 5] with rows 7 apart.
                     Random r("column_sums");
                     const std::vector<double> x = r.values(6 * 7, dt), start = r.values(5, dt);
                     Tensor tx = upload(t, x, dt), out = output(t, 5, dt), acc = upload(t, start, dt);
                     t.backend->column_sums(dt, tx.raw_data(), 6, 5, 7, out.raw_data(), false);
                     t.backend->column_sums(dt, tx.raw_data(), 6, 5, 7, acc.raw_data(), true);
                     std::vector<double> want(5, 0.0), want_acc = start;
                     for (int64_t i = 0; i < 6; ++i)
                       for (int64_t j = 0; j < 5; ++j) {
                         want[size_t(j)] += x[size_t(i * 7 + j)];
                         want_acc[size_t(j)] += x[size_t(i * 7 + j)];
                       }
                     return std::vector<Check>{{"sums", download(out), want, tolerance(dt)},
                                               {"accumulated", download(acc), want_acc, tolerance(dt)}};
                   }});
}

struct LoraRef {
  std::vector<double> u, y, dx, da, db, dw, dbias;
};

// y = x W^T + bias + the adapter branch (dropout pre or post, p 0: none); gradients from g. base_round: how the left
// operands of the base products are rounded (to bf16 under a bf16 base); the intermediates the kernel stores (u,
// drop(x), scale g B, the branch) are rounded to dt as it stores them.
LoraRef lora_ref(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& bias,
                 const std::vector<double>& a, const std::vector<double>& b, const std::vector<double>& g,
                 const kernels::LoraDims& d, double scale, const kernels::LoraDropout& drop, DType base_round,
                 DType dt) {
  const int64_t rows = d.rows, in = d.in, out = d.out, rank = d.rank;
  const bool pre = drop.p > 0 && !drop.post, post = drop.p > 0 && drop.post;
  auto drop_pre = [&](std::vector<double> v) {
    return pre ? rounded(dropped(std::move(v), drop.p, drop.seed, drop.first_block), dt) : v;
  };
  auto drop_post = [&](std::vector<double> v) {
    return post ? rounded(dropped(std::move(v), drop.p, drop.seed, drop.first_block), dt) : v;
  };
  LoraRef r;
  const std::vector<double> xb = rounded(x, base_round), gb = rounded(g, base_round);
  r.u = rounded(matmul_ref(drop_pre(x), false, a, true, rows, rank, in), dt);  // drop(x) A^T
  std::vector<double> branch = matmul_ref(r.u, false, b, true, rows, out, rank);
  for (double& v : branch) v *= scale;
  if (post) branch = drop_post(rounded(branch, dt));
  r.y = matmul_ref(xb, false, w, true, rows, out, in);
  for (size_t i = 0; i < r.y.size(); ++i) r.y[i] += bias[i % size_t(out)] + branch[i];
  const std::vector<double> gl = drop_post(g);                                // the gradient reaching the branch
  std::vector<double> gu = matmul_ref(gl, false, b, false, rows, rank, out);  // scale g B
  for (double& v : gu) v = rounded(v * scale, dt);
  r.db = matmul_ref(gl, true, r.u, false, out, rank, rows);
  for (double& v : r.db) v *= scale;
  r.da = matmul_ref(gu, true, drop_pre(x), false, rank, in, rows);
  r.dx = matmul_ref(gb, false, w, false, rows, in, out);
  const std::vector<double> adapter_dx = drop_pre(matmul_ref(gu, false, a, false, rows, in, rank));
  for (size_t i = 0; i < r.dx.size(); ++i) r.dx[i] += adapter_dx[i];
  r.dw = matmul_ref(g, true, x, false, out, in, rows);
  r.dbias.assign(size_t(out), 0.0);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < out; ++j) r.dbias[size_t(j)] += g[size_t(i * out + j)];
  return r;
}

void lora_cases(std::vector<Case>& cases) {
  const kernels::LoraDims dims{6, 9, 7, 3};
  const double scale = 1.75;
  for (bool backward : {false, true}) {
    const std::string kernel = backward ? "lora_linear_backward" : "lora_linear_forward";
    cases.push_back({kernel, kFloating, [=](const Target& t, DType dt) {
                       std::vector<Check> checks;
                       // no dropout; dropout before A; dropout after B; (f32) a frozen bf16 base.
                       for (int variant = 0; variant < (dt == DType::f32 ? 4 : 3); ++variant) {
                         Random r(kernel);
                         const DType base_dt = variant == 3 ? DType::bf16 : dt;
                         kernels::LoraDropout drop;
                         if (variant == 1 || variant == 2) drop = {0.25, variant == 2, 99, 5};
                         const std::vector<double> x = r.values(dims.rows * dims.in, dt);
                         const std::vector<double> w = r.values(dims.out * dims.in, base_dt);
                         const std::vector<double> bias = r.values(dims.out, base_dt);
                         const std::vector<double> a = r.values(dims.rank * dims.in, dt);
                         const std::vector<double> b = r.values(dims.out * dims.rank, dt);
                         const std::vector<double> g = r.values(dims.rows * dims.out, dt);
                         const LoraRef want = lora_ref(x, w, bias, a, b, g, dims, scale, drop,
                                                       base_dt == dt ? DType::f64 : DType::bf16, dt);
                         Tensor tx = upload(t, x, dt), tw = upload(t, w, base_dt), tbias = upload(t, bias, base_dt);
                         Tensor ta = upload(t, a, dt), tb = upload(t, b, dt);
                         const std::string tag = " variant " + std::to_string(variant);
                         if (!backward) {
                           Tensor u = output(t, dims.rows * dims.rank, dt), y = output(t, dims.rows * dims.out, dt);
                           t.backend->lora_linear_forward(dt, base_dt, tx.raw_data(), tw.raw_data(), tbias.raw_data(),
                                                          ta.raw_data(), tb.raw_data(), dims, scale, drop, u.raw_data(),
                                                          y.raw_data());
                           checks.push_back({"u" + tag, download(u), want.u, tolerance(dt)});
                           checks.push_back({"y" + tag, download(y), want.y, tolerance(dt)});
                           continue;
                         }
                         Tensor tg = upload(t, g, dt), tu = upload(t, rounded(want.u, dt), dt);
                         Tensor dx = output(t, dims.rows * dims.in, dt), da = output(t, dims.rank * dims.in, dt);
                         Tensor db = output(t, dims.out * dims.rank, dt), dw = output(t, dims.out * dims.in, dt);
                         Tensor dbias = output(t, dims.out, dt);
                         const bool frozen = base_dt != dt;
                         t.backend->lora_linear_backward(
                             dt, base_dt, tg.raw_data(), tx.raw_data(), tw.raw_data(), ta.raw_data(), tb.raw_data(),
                             tu.raw_data(), dims, scale, drop, dx.raw_data(), da.raw_data(), db.raw_data(),
                             frozen ? nullptr : dw.raw_data(), frozen ? nullptr : dbias.raw_data());
                         checks.push_back({"dx" + tag, download(dx), want.dx, tolerance(dt)});
                         checks.push_back({"da" + tag, download(da), want.da, tolerance(dt)});
                         checks.push_back({"db" + tag, download(db), want.db, tolerance(dt)});
                         if (!frozen) {
                           checks.push_back({"dw" + tag, download(dw), want.dw, tolerance(dt)});
                           checks.push_back({"dbias" + tag, download(dbias), want.dbias, tolerance(dt)});
                         }
                       }
                       return checks;
                     }});
  }
}

void loss_cases(std::vector<Case>& cases) {
  const int64_t rows = 6, vocab = 37, ignore = -100;
  const std::vector<double> labels{3, ignore, 0, 36, 17, 5};
  auto logsumexp = [](const double* x, int64_t n) {
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
    for (int64_t i = 0; i < n; ++i) s += std::exp(x[i] - m);
    return std::pair{m, std::log(s)};
  };
  cases.push_back({"cross_entropy_forward", kFloating, [=](const Target& t, DType dt) {
                     Random r("cross_entropy_forward");
                     const std::vector<double> x = r.values(rows * vocab, dt, -6, 6);
                     Tensor tx = upload(t, x, dt), tl = upload(t, labels, DType::i64);
                     Tensor loss = output(t, rows, stat_dtype(dt)), stats = output(t, 2 * rows, stat_dtype(dt));
                     t.backend->cross_entropy_forward(dt, tx.raw_data(), tl.data<int64_t>(), rows, vocab, ignore,
                                                      loss.raw_data(), stats.raw_data());
                     std::vector<double> want_loss(size_t(rows), 0.0), want_stats(size_t(2 * rows), 0.0);
                     for (int64_t i = 0; i < rows; ++i) {
                       if (labels[size_t(i)] == ignore) continue;
                       const auto [m, ls] = logsumexp(x.data() + i * vocab, vocab);
                       want_stats[size_t(2 * i)] = m;
                       want_stats[size_t(2 * i + 1)] = ls;
                       want_loss[size_t(i)] = ls - (x[size_t(i * vocab + int64_t(labels[size_t(i)]))] - m);
                     }
                     return std::vector<Check>{{"loss", download(loss), want_loss, tolerance(stat_dtype(dt))},
                                               {"stats", download(stats), want_stats, tolerance(stat_dtype(dt))}};
                   }});
  cases.push_back(
      {"cross_entropy_backward", kFloating, [=](const Target& t, DType dt) {
         std::vector<Check> checks;
         for (int64_t stride : {0, 1}) {  // one shared upstream gradient, or one per row
           Random r("cross_entropy_backward");
           const std::vector<double> x = r.values(rows * vocab, dt, -6, 6), g = r.values(rows, dt);
           std::vector<double> stats(size_t(2 * rows), 0.0);
           for (int64_t i = 0; i < rows; ++i) {
             const auto [m, ls] = logsumexp(x.data() + i * vocab, vocab);
             stats[size_t(2 * i)] = labels[size_t(i)] == ignore ? 0.0 : m;
             stats[size_t(2 * i + 1)] = labels[size_t(i)] == ignore ? 0.0 : ls;
           }
           stats = rounded(stats, stat_dtype(dt));
           Tensor tx = upload(t, x, dt), tl = upload(t, labels, DType::i64), tg = upload(t, g, dt);
           Tensor ts = upload(t, stats, stat_dtype(dt)), dx = output(t, rows * vocab, dt);
           t.backend->cross_entropy_backward(dt, tx.raw_data(), tl.data<int64_t>(), ts.raw_data(), tg.raw_data(),
                                             stride, 0.5, rows, vocab, ignore, dx.raw_data());
           std::vector<double> want(x.size(), 0.0);
           for (int64_t i = 0; i < rows; ++i) {
             if (labels[size_t(i)] == ignore) continue;
             const double up = g[size_t(i * stride)] * 0.5;
             for (int64_t v = 0; v < vocab; ++v) {
               const double p = std::exp(x[size_t(i * vocab + v)] - stats[size_t(2 * i)] - stats[size_t(2 * i + 1)]);
               want[size_t(i * vocab + v)] = (p - (v == int64_t(labels[size_t(i)]) ? 1 : 0)) * up;
             }
           }
           checks.push_back({"stride " + std::to_string(stride), download(dx), want, tolerance(dt)});
         }
         return checks;
       }});
  cases.push_back({"count_labels", {DType::i64}, [=](const Target& t, DType) {
                     Tensor tl = upload(t, labels, DType::i64);
                     Tensor bad = upload(t, {3, ignore, 0, 37, 17}, DType::i64);  // 37 >= vocab at position 3
                     int64_t position = -1, bad_position = -1;
                     const double count =
                         double(t.backend->count_labels(tl.data<int64_t>(), rows, vocab, ignore, &position));
                     const double none =
                         double(t.backend->count_labels(bad.data<int64_t>(), 5, vocab, ignore, &bad_position));
                     return std::vector<Check>{{"count", {count}, {5}, 0},
                                               {"out of range", {none, double(bad_position)}, {-1, 3}, 0}};
                   }});
  cases.push_back(
      {"sum_in_order", {DType::f32, DType::f64}, [](const Target& t, DType dt) {
         Random r("sum_in_order");
         const std::vector<double> x = r.values(101, dt);
         Tensor tx = upload(t, x, dt);
         double want = 0.25;  // the start, then one addition after another
         for (double v : x) want += v;
         return std::vector<Check>{{"sum", {t.backend->sum_in_order(dt, tx.raw_data(), 101, 0.25)}, {want}, 0}};
       }});
}

}  // namespace

void optim_cases(std::vector<Case>& cases);  // backend_ops_cases_optim.cpp
void moe_cases(std::vector<Case>& cases);    // backend_ops_cases_moe.cpp

void more_cases(std::vector<Case>& cases) {
  rope_cases(cases);
  attention_cases(cases);
  lookup_cases(cases);
  dropout_cases(cases);
  product_cases(cases);
  lora_cases(cases);
  loss_cases(cases);
  optim_cases(cases);
  moe_cases(cases);
}

}  // namespace automodel::backend_test
