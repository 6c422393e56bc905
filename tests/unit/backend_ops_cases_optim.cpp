// Cases of backend_ops_test.cpp for the table's fused linear cross-entropy and optimizer entries.
#include <cmath>
#include <cstring>
#include <limits>

#include "backend_ops_cases.h"
#include "core/device_memory.h"
#include "core/rng.h"
#include "kernels/cpu/quant8.h"

namespace automodel::backend_test {

namespace {

const std::vector<DType> kFloating{DType::f32, DType::f64, DType::bf16};

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// An f32 buffer holding exactly these floats (NaN payloads too, which a trip through double may change).
Tensor upload_floats(const Target& t, const std::vector<float>& x) {
  Tensor out = Tensor::empty({int64_t(x.size())}, DType::f32, t.device);
  device_memory(t.device).copy_from_host(out.raw_data(), x.data(), x.size() * sizeof(float));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Fused linear cross-entropy

struct LinearCeRef {
  double total = 0;
  std::vector<double> dhidden, dweight;
};

LinearCeRef linear_ce_ref(const kernels::LinearCrossEntropyProblem& p, const std::vector<double>& hidden,
                          const std::vector<double>& weight, const std::vector<double>& labels) {
  const int64_t N = p.rows, H = p.hidden, V = p.vocab;
  LinearCeRef r;
  r.dhidden.assign(size_t(N * H), 0.0);
  r.dweight.assign(size_t(V * H), 0.0);
  for (int64_t i = 0; i < N; ++i) {
    if (int64_t(labels[size_t(i)]) == p.ignore_index) continue;
    std::vector<double> raw(static_cast<size_t>(V)), logit(static_cast<size_t>(V));
    double m = -INFINITY;
    for (int64_t v = 0; v < V; ++v) {
      double s = 0;
      for (int64_t h = 0; h < H; ++h) s += hidden[size_t(i * H + h)] * weight[size_t(v * H + h)];
      raw[size_t(v)] = s;
      logit[size_t(v)] = p.softcap > 0 ? p.softcap * std::tanh(s / p.softcap) : s;
      m = std::max(m, logit[size_t(v)]);
    }
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logit[size_t(v)] - m);
    const int64_t label = int64_t(labels[size_t(i)]);
    r.total += m + std::log(sum) - logit[size_t(label)];
    for (int64_t v = 0; v < V; ++v) {
      double d = (std::exp(logit[size_t(v)] - m) / sum - (v == label ? 1 : 0)) * p.grad_scale;
      if (p.softcap > 0) d *= 1 - std::pow(std::tanh(raw[size_t(v)] / p.softcap), 2);
      for (int64_t h = 0; h < H; ++h) {
        r.dhidden[size_t(i * H + h)] += d * weight[size_t(v * H + h)];
        r.dweight[size_t(v * H + h)] += d * hidden[size_t(i * H + h)];
      }
    }
  }
  return r;
}

kernels::LinearCrossEntropyProblem linear_ce_problem() {
  kernels::LinearCrossEntropyProblem p;
  p.rows = 7, p.hidden = 11, p.vocab = 29, p.chunk = 2, p.ignore_index = -100, p.grad_scale = 0.25;
  return p;
}

void linear_ce_cases(std::vector<Case>& cases) {
  cases.push_back({"linear_cross_entropy_workspace", kFloating, [](const Target& t, DType dt) {
                     // At least a chunk of logits in the compute type; more with gradients, and for a larger chunk.
                     kernels::LinearCrossEntropyProblem p = linear_ce_problem();
                     const double loss_only = double(t.backend->linear_cross_entropy_workspace(dt, p, false));
                     const double with_grad = double(t.backend->linear_cross_entropy_workspace(dt, p, true));
                     p.chunk *= 2;
                     const double larger = double(t.backend->linear_cross_entropy_workspace(dt, p, false));
                     const double logits = double(linear_ce_problem().chunk * p.vocab * (dt == DType::f64 ? 8 : 4));
                     return std::vector<Check>{{"holds a chunk of logits", {double(loss_only >= logits)}, {1}, 0},
                                               {"gradients take room", {double(with_grad >= loss_only)}, {1}, 0},
                                               {"grows with the chunk", {double(larger > loss_only)}, {1}, 0}};
                   }});
  cases.push_back({"linear_cross_entropy", kFloating, [](const Target& t, DType dt) {
                     std::vector<Check> checks;
                     for (int variant = 0; variant < 3; ++variant) {  // plain; soft-capped; d(weight) accumulated
                       Random r("linear_cross_entropy");
                       kernels::LinearCrossEntropyProblem p = linear_ce_problem();
                       p.softcap = variant == 1 ? 3.0 : 0.0;
                       p.accumulate_dweight = variant == 2;
                       const std::vector<double> hidden = r.values(p.rows * p.hidden, dt);
                       const std::vector<double> weight = r.values(p.vocab * p.hidden, dt);
                       const std::vector<double> labels{3, -100, 0, 28, 17, -100, 5};
                       const std::vector<double> dw0 = r.values(p.vocab * p.hidden, dt);
                       Tensor th = upload(t, hidden, dt), tw = upload(t, weight, dt),
                              tl = upload(t, labels, DType::i64);
                       Tensor dh = output(t, p.rows * p.hidden, dt);
                       Tensor dw = p.accumulate_dweight ? upload(t, dw0, dt) : output(t, p.vocab * p.hidden, dt);
                       const size_t bytes = t.backend->linear_cross_entropy_workspace(dt, p, true);
                       Tensor ws = Tensor::empty({int64_t((bytes + 7) / 8)}, DType::f64, t.device);
                       const double total =
                           t.backend->linear_cross_entropy(dt, p, th.raw_data(), tw.raw_data(), tl.data<int64_t>(),
                                                           dh.raw_data(), dw.raw_data(), ws.raw_data());
                       LinearCeRef want = linear_ce_ref(p, hidden, weight, labels);
                       if (p.accumulate_dweight)
                         for (size_t i = 0; i < want.dweight.size(); ++i) want.dweight[i] += dw0[i];
                       const std::string tag = " variant " + std::to_string(variant);
                       checks.push_back({"loss" + tag, {total}, {want.total}, tolerance(dt)});
                       checks.push_back({"dhidden" + tag, download(dh), want.dhidden, tolerance(dt)});
                       checks.push_back({"dweight" + tag, download(dw), want.dweight, tolerance(dt)});
                       // The loss alone (no gradients wanted), in the smaller workspace.
                       const size_t loss_bytes = t.backend->linear_cross_entropy_workspace(dt, p, false);
                       Tensor ws2 = Tensor::empty({int64_t((loss_bytes + 7) / 8)}, DType::f64, t.device);
                       const double alone = t.backend->linear_cross_entropy(
                           dt, p, th.raw_data(), tw.raw_data(), tl.data<int64_t>(), nullptr, nullptr, ws2.raw_data());
                       checks.push_back({"loss alone" + tag, {alone}, {want.total}, tolerance(dt)});
                     }
                     return checks;
                   }});
}

// ---------------------------------------------------------------------------------------------
// Optimizer updates

constexpr int64_t kN = 1031;  // several vector bodies and a tail

// The update's pairs of an element type: p / p, and for f32 also an f32 master with bf16 gradients.
std::vector<DType> gradient_types(DType dt) {
  return dt == DType::f32 ? std::vector<DType>{DType::f32, DType::bf16} : std::vector<DType>{dt};
}

void update_cases(std::vector<Case>& cases) {
  cases.push_back(
      {"adam_update", kFloating, [](const Target& t, DType dt) {
         std::vector<Check> checks;
         const DType sdt = stat_dtype(dt);
         for (DType gdt : gradient_types(dt))
           for (bool decoupled : {true, false}) {
             Random r("adam_update");
             const std::vector<double> p = r.values(kN, dt), g = r.values(kN, gdt);
             const std::vector<double> m = r.values(kN, sdt), v = r.values(kN, sdt, 0, 1);
             kernels::AdamStep s;
             const double lr = 0.01, wd = 0.1, b1 = 0.9, b2 = 0.999, step = 3;
             s.decoupled = decoupled, s.decay = 1 - lr * wd, s.weight_decay = wd, s.one_minus_beta1 = 1 - b1;
             s.beta2 = b2, s.one_minus_beta2 = 1 - b2, s.bc2_sqrt = std::sqrt(1 - std::pow(b2, step));
             s.eps = 1e-8, s.neg_step_size = -(lr / (1 - std::pow(b1, step)));
             Tensor tp = upload(t, p, dt), tg = upload(t, g, gdt), tm = upload(t, m, sdt), tv = upload(t, v, sdt);
             t.backend->adam_update(dt, gdt, s, tp.raw_data(), tg.raw_data(), tm.raw_data(), tv.raw_data(), kN);
             std::vector<double> wp(p.size()), wm(p.size()), wv(p.size());
             for (size_t i = 0; i < p.size(); ++i) {
               double pi = p[i], gi = g[i];
               if (decoupled)
                 pi *= s.decay;
               else
                 gi += wd * pi;
               wm[i] = m[i] + s.one_minus_beta1 * (gi - m[i]);
               wv[i] = v[i] * b2 + s.one_minus_beta2 * gi * gi;
               wp[i] = pi + s.neg_step_size * wm[i] / (std::sqrt(wv[i]) / s.bc2_sqrt + s.eps);
             }
             const std::string tag = std::string(decoupled ? " adamw" : " adam") + " grad " + dtype_name(gdt);
             checks.push_back({"p" + tag, download(tp), wp, tolerance(dt)});
             checks.push_back({"exp_avg" + tag, download(tm), wm, tolerance(sdt)});
             checks.push_back({"exp_avg_sq" + tag, download(tv), wv, tolerance(sdt)});
           }
         return checks;
       }});
  cases.push_back(
      {"sgd_update", kFloating, [](const Target& t, DType dt) {
         std::vector<Check> checks;
         const DType sdt = stat_dtype(dt);
         for (DType gdt : gradient_types(dt))
           for (int kind = 0; kind < 3; ++kind)
             for (bool nesterov : {false, true}) {
               Random r("sgd_update");
               const std::vector<double> p = r.values(kN, dt), g = r.values(kN, gdt), buf = r.values(kN, sdt);
               kernels::SgdStep s;
               s.weight_decay = kind == 1 ? 0.0 : 0.05, s.momentum = 0.9, s.one_minus_dampening = 0.8;
               s.neg_lr = -0.1, s.kind = kind, s.nesterov = nesterov;
               Tensor tp = upload(t, p, dt), tg = upload(t, g, gdt), tb = upload(t, buf, sdt);
               t.backend->sgd_update(dt, gdt, s, tp.raw_data(), tg.raw_data(), kind ? tb.raw_data() : nullptr, kN);
               std::vector<double> wp(p.size()), wb = buf;
               for (size_t i = 0; i < p.size(); ++i) {
                 double d = g[i] + s.weight_decay * p[i];
                 if (kind != 0) {
                   wb[i] = kind == 1 ? d : buf[i] * s.momentum + s.one_minus_dampening * d;
                   d = nesterov ? d + s.momentum * wb[i] : wb[i];
                 }
                 wp[i] = p[i] + s.neg_lr * d;
               }
               const std::string tag =
                   " kind " + std::to_string(kind) + (nesterov ? " nesterov" : "") + " grad " + dtype_name(gdt);
               checks.push_back({"p" + tag, download(tp), wp, tolerance(dt)});
               checks.push_back({"momentum_buffer" + tag, download(tb), wb, tolerance(sdt)});
             }
         return checks;
       }});
  cases.push_back({"grad_prologue", kFloating, [](const Target& t, DType dt) {
                     Random r("grad_prologue");
                     const std::vector<double> g = r.values(kN, dt);
                     Tensor tg = upload(t, g, dt);
                     double sum_sq = 0.5;  // added to
                     t.backend->grad_prologue(dt, tg.raw_data(), kN, &sum_sq, true, 0.75);
                     double want_sum = 0.5;
                     std::vector<double> want(g.size());
                     for (size_t i = 0; i < g.size(); ++i) {
                       want_sum += g[i] * g[i];
                       want[i] = g[i] * 0.75;
                     }
                     Tensor untouched = upload(t, g, dt);
                     t.backend->grad_prologue(dt, untouched.raw_data(), kN, nullptr, false, 0.75);
                     return std::vector<Check>{{"sum of squares", {sum_sq}, {want_sum}, tolerance(DType::f64)},
                                               {"scaled", download(tg), want, tolerance(dt)},
                                               {"neither", download(untouched), g, 0}};
                   }});
  cases.push_back({"grad_norm_power", kFloating, [](const Target& t, DType dt) {
                     Random r("grad_norm_power");
                     const int64_t n = (1 << 14) + 37;  // past the threshold where the reduction runs in parallel
                     const std::vector<double> g = r.values(n, dt);
                     Tensor tg = upload(t, g, dt);
                     std::vector<Check> checks;
                     for (double norm : {2.0, 3.0, double(INFINITY)}) {
                       double want = 0;
                       for (double x : g)
                         want = std::isinf(norm) ? std::max(want, std::abs(x)) : want + std::pow(std::abs(x), norm);
                       checks.push_back({"norm " + std::to_string(norm),
                                         {t.backend->grad_norm_power(dt, tg.raw_data(), n, norm)},
                                         {want},
                                         1e-9});
                     }
                     return checks;
                   }});
}

// ---------------------------------------------------------------------------------------------
// Split masters and stochastic rounding (bit-exact: the definitions of master_split.h)

// Floats around bf16 rounding boundaries: random ones, ties of both parities, NaN, infinities, zero.
std::vector<float> split_inputs() {
  std::vector<float> x;
  std::mt19937 gen(7);
  std::uniform_int_distribution<uint32_t> u;
  for (int i = 0; i < 997; ++i) x.push_back(from_bits(u(gen)));
  for (uint32_t hi : {0x3f80u, 0x3f81u, 0xbf80u, 0xbf81u, 0x4049u})
    for (uint32_t lo : {0x0000u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) x.push_back(from_bits((hi << 16) | lo));
  for (float f : {INFINITY, -INFINITY, NAN, 0.0f, -0.0f}) x.push_back(f);
  return x;
}

void master_cases(std::vector<Case>& cases) {
  cases.push_back(
      {"master_split", {DType::bf16}, [](const Target& t, DType) {
         const std::vector<float> x = split_inputs();
         const int64_t n = int64_t(x.size());
         Tensor tx = upload_floats(t, x), tp = output(t, n, DType::bf16), tr = output(t, n, DType::bf16);
         std::vector<int64_t> failures(x.size());
         const int64_t failed =
             t.backend->master_split(tx.data<float>(), tp.raw_data(), tr.raw_data(), n, failures.data());
         // p = the bf16 rounding of x, r = x's low half; a float whose pair does not restore it is a failure.
         std::vector<double> want_p, want_r, want_failures, got_p, got_r;
         for (int64_t i = 0; i < n; ++i) {
           const uint32_t u = bits(x[size_t(i)]);
           const uint32_t p = float_to_bf16(x[size_t(i)]).bits, r = u & 0xffffu;
           want_p.push_back(double(p));
           want_r.push_back(double(r));
           if ((((p - (r > 0x8000u ? 1u : 0u)) << 16) | r) != u) want_failures.push_back(double(i));
         }
         const std::vector<bf16> pb = [&] {
           std::vector<bf16> v(x.size());
           device_memory(t.device).copy_to_host(v.data(), tp.raw_data(), v.size() * 2);
           return v;
         }();
         const std::vector<bf16> rb = [&] {
           std::vector<bf16> v(x.size());
           device_memory(t.device).copy_to_host(v.data(), tr.raw_data(), v.size() * 2);
           return v;
         }();
         for (size_t i = 0; i < x.size(); ++i) {
           got_p.push_back(double(pb[i].bits));
           got_r.push_back(double(rb[i].bits));
         }
         return std::vector<Check>{
             {"p", got_p, want_p, 0},
             {"r", got_r, want_r, 0},
             {"failures", std::vector<double>(failures.begin(), failures.begin() + failed), want_failures, 0}};
       }});
  cases.push_back({"master_reconstruct", {DType::bf16}, [](const Target& t, DType) {
                     // Every (p, r) pair of a few high halves: r > 0x8000 means the rounding went up.
                     std::vector<bf16> p, r;
                     std::vector<double> want;
                     for (uint16_t hi : {uint16_t(0x3f80), uint16_t(0x3f81), uint16_t(0xc2f7)})
                       for (uint32_t lo = 0; lo < 0x10000u; lo += 0x101u) {
                         p.push_back(bf16{hi});
                         r.push_back(bf16{uint16_t(lo)});
                         want.push_back(double(from_bits(((uint32_t(hi) - (lo > 0x8000u ? 1u : 0u)) << 16) | lo)));
                       }
                     const int64_t n = int64_t(p.size());
                     Tensor tp = output(t, n, DType::bf16), tr = output(t, n, DType::bf16),
                            tx = output(t, n, DType::f32);
                     device_memory(t.device).copy_from_host(tp.raw_data(), p.data(), p.size() * 2);
                     device_memory(t.device).copy_from_host(tr.raw_data(), r.data(), r.size() * 2);
                     t.backend->master_reconstruct(tp.raw_data(), tr.raw_data(), tx.data<float>(), n);
                     return std::vector<Check>{{"x", download(tx), want, 0}};
                   }});
  cases.push_back({"stochastic_round", {DType::bf16}, [](const Target& t, DType) {
                     // Element i (from an even `first`) rounds up, away from zero, when the 16-bit half (low for even
                     // i, high for odd) of hash32(key ^ hash32((first + i) / 2)) is below x's low half; inf / NaN
                     // round as float_to_bf16.
                     const std::vector<float> x = split_inputs();
                     const int64_t n = int64_t(x.size()), first = 40;
                     const uint32_t key = 0x1234567u;
                     Tensor tx = upload_floats(t, x);
                     Tensor tp = output(t, n, DType::bf16);
                     t.backend->stochastic_round(tx.data<float>(), tp.raw_data(), n, key, first);
                     std::vector<double> want;
                     for (int64_t i = 0; i < n; ++i) {
                       const uint32_t u = bits(x[size_t(i)]);
                       const uint32_t h = hash32(key ^ hash32(uint32_t((first + i) / 2)));
                       const uint32_t rnd = (first + i) % 2 == 0 ? (h & 0xffffu) : (h >> 16);
                       const bool special = (u & 0x7f800000u) == 0x7f800000u;
                       const uint32_t hi =
                           special ? float_to_bf16(x[size_t(i)]).bits : (u >> 16) + (rnd < (u & 0xffffu) ? 1u : 0u);
                       want.push_back(double(bf16_to_float(bf16{uint16_t(hi)})));
                     }
                     return std::vector<Check>{{"p", download(tp), want, 0}};
                   }});
}

// ---------------------------------------------------------------------------------------------
// AdamW8bit

kernels::Adam8Step adam8_step() {
  kernels::Adam8Step s;
  const float lr = 0.01f, step = 3;
  s.lr_wd = lr * 0.1f;
  s.step_size = lr / (1.0f - std::pow(0.9f, step));
  s.bc2_sqrt = std::sqrt(1.0f - std::pow(0.999f, step));
  s.bc2_sqrt_recip = 1.0f / s.bc2_sqrt;
  s.w1 = 0.1f, s.w2 = 0.001f, s.eps = 1e-8f;
  return s;
}

// torchao's single_param_adam on one element (in double): p, m, v become the new ones.
void adam8_ref(double& p, double g, double& m, double& v, const kernels::Adam8Step& s) {
  p -= s.lr_wd * p;
  m += s.w1 * (g - m);
  v += s.w2 * (g * g - v);
  p -= s.step_size * m / (std::sqrt(v) / s.bc2_sqrt + s.eps);
}

// (p, g) pairs: f32 / f32, f32 master / bf16, bf16 / bf16 (also rounded stochastically).
struct Adam8Types {
  DType p, g;
  bool rounds;
};
const Adam8Types kAdam8Types[] = {{DType::f32, DType::f32, false},
                                  {DType::f32, DType::bf16, false},
                                  {DType::bf16, DType::bf16, false},
                                  {DType::bf16, DType::bf16, true}};

std::string adam8_tag(const Adam8Types& k) {
  return std::string(" ") + dtype_name(k.p) + "/" + dtype_name(k.g) + (k.rounds ? " rounded" : "");
}

void adamw8bit_cases(std::vector<Case>& cases) {
  cases.push_back({"adamw8bit_dense", {DType::f32}, [](const Target& t, DType) {
                     std::vector<Check> checks;
                     const kernels::Adam8Step s = adam8_step();
                     for (const Adam8Types& k : kAdam8Types) {
                       Random r("adamw8bit_dense");
                       const std::vector<double> p = r.values(kN, k.p), g = r.values(kN, k.g);
                       const std::vector<double> m = r.values(kN, DType::f32), v = r.values(kN, DType::f32, 0, 1);
                       Tensor tp = upload(t, p, k.p), tg = upload(t, g, k.g), tm = upload(t, m, DType::f32),
                              tv = upload(t, v, DType::f32);
                       t.backend->adamw8bit_dense(k.p, k.g, s, tp.raw_data(), tg.raw_data(), tm.data<float>(),
                                                  tv.data<float>(), kN, k.rounds, 99u, 0);
                       std::vector<double> wp = p, wm = m, wv = v;
                       for (size_t i = 0; i < p.size(); ++i) adam8_ref(wp[i], g[i], wm[i], wv[i], s);
                       checks.push_back({"p" + adam8_tag(k), download(tp), wp, tolerance(k.p)});
                       checks.push_back({"exp_avg" + adam8_tag(k), download(tm), wm, tolerance(DType::f32)});
                       checks.push_back({"exp_avg_sq" + adam8_tag(k), download(tv), wv, tolerance(DType::f32)});
                     }
                     return checks;
                   }});
  cases.push_back(
      {"adamw8bit_blocks", {DType::f32}, [](const Target& t, DType) {
         // 4 blocks of 256: the old moments are the codes' map values times the block's scale; the new
         // ones are stored as the codes nearest to them / the new scale (max |moment| of the block).
         std::vector<Check> checks;
         const kernels::Adam8Step s = adam8_step();
         const int64_t bs = 256, n = 4 * bs;
         const float* tm = cpu::q8::signed_map().values();
         const float* tvals = cpu::q8::unsigned_map().values();
         for (const Adam8Types& k : kAdam8Types) {
           Random r("adamw8bit_blocks");
           const std::vector<double> p = r.values(n, k.p), g = r.values(n, k.g);
           const std::vector<double> cm = r.integers(n, 0, 255), cv = r.integers(n, 128, 255);
           const std::vector<double> sm = r.values(4, DType::f32, 0.5, 2), sv = r.values(4, DType::f32, 0.5, 2);
           std::vector<uint8_t> cm8(cm.begin(), cm.end()), cv8(cv.begin(), cv.end());
           Tensor tp = upload(t, p, k.p), tg = upload(t, g, k.g);
           Tensor tcm = Tensor::empty({n}, DType::b8, t.device), tcv = Tensor::empty({n}, DType::b8, t.device);
           device_memory(t.device).copy_from_host(tcm.raw_data(), cm8.data(), cm8.size());
           device_memory(t.device).copy_from_host(tcv.raw_data(), cv8.data(), cv8.size());
           Tensor tsm = upload(t, sm, DType::f32), tsv = upload(t, sv, DType::f32);
           t.backend->adamw8bit_blocks(k.p, k.g, s, tp.raw_data(), tg.raw_data(), static_cast<uint8_t*>(tcm.raw_data()),
                                       static_cast<uint8_t*>(tcv.raw_data()), tsm.data<float>(), tsv.data<float>(), n,
                                       bs, k.rounds, 7u, 512);
           std::vector<double> wp = p, wm(static_cast<size_t>(n)), wv(static_cast<size_t>(n)), wsm(4, 0.0), wsv(4, 0.0);
           for (int64_t i = 0; i < n; ++i) {
             wm[size_t(i)] = tm[cm8[size_t(i)]] * sm[size_t(i / bs)];
             wv[size_t(i)] = tvals[cv8[size_t(i)]] * sv[size_t(i / bs)];
             adam8_ref(wp[size_t(i)], g[size_t(i)], wm[size_t(i)], wv[size_t(i)], s);
             wsm[size_t(i / bs)] = std::max(wsm[size_t(i / bs)], std::abs(wm[size_t(i)]));
             wsv[size_t(i / bs)] = std::max(wsv[size_t(i / bs)], std::abs(wv[size_t(i)]));
           }
           std::vector<uint8_t> got_cm(static_cast<size_t>(n)), got_cv(static_cast<size_t>(n));
           device_memory(t.device).copy_to_host(got_cm.data(), tcm.raw_data(), got_cm.size());
           device_memory(t.device).copy_to_host(got_cv.data(), tcv.raw_data(), got_cv.size());
           const std::vector<double> got_sm = download(tsm), got_sv = download(tsv);
           // The stored moments in units of their block's scale, against the exact ones: within half a
           // gap of the map (at most 0.0075 near 1 for exp_avg, 0.004 for exp_avg_sq).
           std::vector<double> qm, qv, em, ev;
           for (int64_t i = 0; i < n; ++i) {
             qm.push_back(tm[got_cm[size_t(i)]]);
             qv.push_back(tvals[got_cv[size_t(i)]]);
             em.push_back(wm[size_t(i)] / wsm[size_t(i / bs)]);
             ev.push_back(wv[size_t(i)] / wsv[size_t(i / bs)]);
           }
           checks.push_back({"p" + adam8_tag(k), download(tp), wp, tolerance(k.p)});
           checks.push_back({"exp_avg scale" + adam8_tag(k), got_sm, wsm, tolerance(DType::f32)});
           checks.push_back({"exp_avg_sq scale" + adam8_tag(k), got_sv, wsv, tolerance(DType::f32)});
           checks.push_back({"exp_avg codes" + adam8_tag(k), qm, em, 0.008});
           checks.push_back({"exp_avg_sq codes" + adam8_tag(k), qv, ev, 0.008});
         }
         return checks;
       }});
}

}  // namespace

void optim_cases(std::vector<Case>& cases) {
  linear_ce_cases(cases);
  update_cases(cases);
  master_cases(cases);
  adamw8bit_cases(cases);
}

}  // namespace automodel::backend_test
