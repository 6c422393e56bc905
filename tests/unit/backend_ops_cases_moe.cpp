// Cases of backend_ops_test.cpp for the mixture-of-experts entries: top-k, token routing and permutation, grouped
// GEMM, GPT-OSS's clamped SwiGLU, each against a naive reference. The routing covers an expert that gets no token.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend_ops_cases.h"

namespace automodel::backend_test {

namespace {

const std::vector<DType> kFloating{DType::f32, DType::f64, DType::bf16};

// Experts chosen by 7 tokens, 2 each, out of 5 experts; expert 3 gets none, expert 1 the most.
const int64_t kTokens = 7, kK = 2, kExperts = 5, kHidden = 6;
const std::vector<double> kChoices{1, 0, 4, 1, 1, 2, 0, 1, 2, 4, 1, 0, 4, 2};

// The rows each slot takes in expert order: experts ascending, slots ascending within an expert.
std::vector<double> reference_positions(const std::vector<double>& experts, int64_t num_experts,
                                        std::vector<double>* counts) {
  std::vector<double> positions(experts.size());
  int64_t row = 0;
  counts->assign(size_t(num_experts), 0);
  for (int64_t e = 0; e < num_experts; ++e)
    for (size_t s = 0; s < experts.size(); ++s)
      if (int64_t(experts[s]) == e) {
        positions[s] = double(row++);
        (*counts)[size_t(e)] += 1;
      }
  return positions;
}

// y[rows of g] = x[rows of g] @ w[g]^T, w [groups, n, k].
std::vector<double> grouped_ref(const std::vector<double>& x, const std::vector<double>& w,
                                const std::vector<int64_t>& counts, int64_t n, int64_t k) {
  std::vector<double> y;
  int64_t row = 0;
  for (size_t g = 0; g < counts.size(); ++g)
    for (int64_t r = 0; r < counts[g]; ++r, ++row)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < k; ++p) s += x[size_t(row * k + p)] * w[size_t((int64_t(g) * n + j) * k + p)];
        y.push_back(s);
      }
  return y;
}

void topk_cases(std::vector<Case>& cases) {
  const int64_t rows = 5, cols = 8, k = 3;
  cases.push_back(
      {"topk_forward", kFloating, [=](const Target& t, DType dt) {
         Random r("topk_forward");
         std::vector<double> x = r.values(rows * cols, dt);
         x[size_t(1 * cols + 2)] = x[size_t(1 * cols + 5)] = 3;  // a tie: the lower column first
         Tensor tx = upload(t, x, dt), values = output(t, rows * k, dt), indices = output(t, rows * k, DType::i64);
         t.backend->topk_forward(dt, tx.raw_data(), rows, cols, k, values.raw_data(), indices.data<int64_t>());
         std::vector<double> want_v, want_i;
         for (int64_t i = 0; i < rows; ++i) {
           std::vector<int64_t> order(static_cast<size_t>(cols));
           std::iota(order.begin(), order.end(), 0);
           std::stable_sort(order.begin(), order.end(),
                            [&](int64_t a, int64_t b) { return x[size_t(i * cols + a)] > x[size_t(i * cols + b)]; });
           for (int64_t j = 0; j < k; ++j) {
             want_v.push_back(x[size_t(i * cols + order[size_t(j)])]);
             want_i.push_back(double(order[size_t(j)]));
           }
         }
         return std::vector<Check>{{"values", download(values), want_v, 0}, {"indices", download(indices), want_i, 0}};
       }});
  cases.push_back({"topk_backward", kFloating, [=](const Target& t, DType dt) {
                     Random r("topk_backward");
                     const std::vector<double> g = r.values(rows * k, dt);
                     std::vector<double> idx;
                     for (int64_t i = 0; i < rows; ++i)
                       for (int64_t j = 0; j < k; ++j) idx.push_back(double((i + 3 * j) % cols));
                     Tensor tg = upload(t, g, dt), ti = upload(t, idx, DType::i64), gx = output(t, rows * cols, dt);
                     t.backend->topk_backward(dt, tg.raw_data(), ti.data<int64_t>(), rows, cols, k, gx.raw_data());
                     std::vector<double> want(size_t(rows * cols), 0.0);
                     for (int64_t i = 0; i < rows; ++i)
                       for (int64_t j = 0; j < k; ++j)
                         want[size_t(i * cols + int64_t(idx[size_t(i * k + j)]))] = g[size_t(i * k + j)];
                     return std::vector<Check>{{"gx", download(gx), want, 0}};
                   }});
}

void routing_cases(std::vector<Case>& cases) {
  cases.push_back({"moe_routing", {DType::i64}, [](const Target& t, DType) {
                     Tensor te = upload(t, kChoices, DType::i64), counts = output(t, kExperts, DType::i64),
                            positions = output(t, kTokens * kK, DType::i64);
                     t.backend->moe_routing(te.data<int64_t>(), kTokens * kK, kExperts, counts.data<int64_t>(),
                                            positions.data<int64_t>());
                     std::vector<double> want_counts;
                     const std::vector<double> want = reference_positions(kChoices, kExperts, &want_counts);
                     return std::vector<Check>{{"counts", download(counts), want_counts, 0},
                                               {"positions", download(positions), want, 0}};
                   }});
  std::vector<double> counts;
  const std::vector<double> positions = reference_positions(kChoices, kExperts, &counts);
  cases.push_back({"moe_permute_forward", kFloating, [=](const Target& t, DType dt) {
                     Random r("moe_permute_forward");
                     const std::vector<double> x = r.values(kTokens * kHidden, dt);
                     Tensor tx = upload(t, x, dt), tp = upload(t, positions, DType::i64),
                            out = output(t, kTokens * kK * kHidden, dt);
                     t.backend->moe_permute_forward(dt, tx.raw_data(), tp.data<int64_t>(), kTokens, kK, kHidden,
                                                    out.raw_data());
                     std::vector<double> want(size_t(kTokens * kK * kHidden));
                     for (int64_t s = 0; s < kTokens * kK; ++s)
                       for (int64_t h = 0; h < kHidden; ++h)
                         want[size_t(int64_t(positions[size_t(s)]) * kHidden + h)] = x[size_t((s / kK) * kHidden + h)];
                     return std::vector<Check>{{"out", download(out), want, 0}};
                   }});
  cases.push_back(
      {"moe_permute_backward", kFloating, [=](const Target& t, DType dt) {
         Random r("moe_permute_backward");
         const std::vector<double> g = r.values(kTokens * kK * kHidden, dt);
         Tensor tg = upload(t, g, dt), tp = upload(t, positions, DType::i64), dx = output(t, kTokens * kHidden, dt);
         t.backend->moe_permute_backward(dt, tg.raw_data(), tp.data<int64_t>(), kTokens, kK, kHidden, dx.raw_data());
         std::vector<double> want(size_t(kTokens * kHidden), 0.0);
         for (int64_t s = 0; s < kTokens * kK; ++s)
           for (int64_t h = 0; h < kHidden; ++h)
             want[size_t((s / kK) * kHidden + h)] += g[size_t(int64_t(positions[size_t(s)]) * kHidden + h)];
         return std::vector<Check>{{"dx", download(dx), rounded(want, dt), tolerance(dt)}};
       }});
  cases.push_back({"moe_unpermute_forward", kFloating, [=](const Target& t, DType dt) {
                     Random r("moe_unpermute_forward");
                     const std::vector<double> y = r.values(kTokens * kK * kHidden, dt), w = r.values(kTokens * kK, dt);
                     Tensor ty = upload(t, y, dt), tw = upload(t, w, dt), tp = upload(t, positions, DType::i64),
                            out = output(t, kTokens * kHidden, dt);
                     t.backend->moe_unpermute_forward(dt, ty.raw_data(), tw.raw_data(), tp.data<int64_t>(), kTokens, kK,
                                                      kHidden, out.raw_data());
                     std::vector<double> want(size_t(kTokens * kHidden), 0.0);
                     for (int64_t s = 0; s < kTokens * kK; ++s)
                       for (int64_t h = 0; h < kHidden; ++h)
                         want[size_t((s / kK) * kHidden + h)] +=
                             w[size_t(s)] * y[size_t(int64_t(positions[size_t(s)]) * kHidden + h)];
                     return std::vector<Check>{{"out", download(out), rounded(want, dt), tolerance(dt)}};
                   }});
  cases.push_back({"moe_unpermute_backward", kFloating, [=](const Target& t, DType dt) {
                     Random r("moe_unpermute_backward");
                     const std::vector<double> y = r.values(kTokens * kK * kHidden, dt), w = r.values(kTokens * kK, dt),
                                               g = r.values(kTokens * kHidden, dt);
                     Tensor ty = upload(t, y, dt), tw = upload(t, w, dt), tg = upload(t, g, dt),
                            tp = upload(t, positions, DType::i64), dy = output(t, kTokens * kK * kHidden, dt),
                            dw = output(t, kTokens * kK, dt);
                     t.backend->moe_unpermute_backward(dt, tg.raw_data(), ty.raw_data(), tw.raw_data(),
                                                       tp.data<int64_t>(), kTokens, kK, kHidden, dy.raw_data(),
                                                       dw.raw_data());
                     std::vector<double> want_dy(size_t(kTokens * kK * kHidden)), want_dw(size_t(kTokens * kK), 0.0);
                     for (int64_t s = 0; s < kTokens * kK; ++s)
                       for (int64_t h = 0; h < kHidden; ++h) {
                         const size_t row = size_t(int64_t(positions[size_t(s)]) * kHidden + h);
                         want_dy[row] = w[size_t(s)] * g[size_t((s / kK) * kHidden + h)];
                         want_dw[size_t(s)] += g[size_t((s / kK) * kHidden + h)] * y[row];
                       }
                     return std::vector<Check>{{"dy", download(dy), rounded(want_dy, dt), tolerance(dt)},
                                               {"dweights", download(dw), rounded(want_dw, dt), tolerance(dt)}};
                   }});
}

// w [groups, n, k] as the transposed layout stores it: [groups, k, n].
std::vector<double> transposed_groups(const std::vector<double>& w, int64_t groups, int64_t n, int64_t k) {
  std::vector<double> t(w.size());
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p) t[size_t((g * k + p) * n + j)] = w[size_t((g * n + j) * k + p)];
  return t;
}

// Each case runs w as [groups, out, in] and, transposed, as [groups, in, out] (GPT-OSS's experts).
void grouped_gemm_cases(std::vector<Case>& cases) {
  // Group 1 has no rows, group 3 most of them.
  const std::vector<int64_t> counts{3, 0, 2, 6};
  const int64_t groups = 4, rows = 11, n = 5, k = 7;
  cases.push_back({"grouped_gemm_forward", kFloating, [=](const Target& t, DType dt) {
                     Random r("grouped_gemm_forward");
                     const std::vector<double> x = r.values(rows * k, dt), w = r.values(groups * n * k, dt);
                     const std::vector<double> want = rounded(grouped_ref(x, w, counts, n, k), dt);
                     std::vector<Check> checks;
                     for (bool transposed : {false, true}) {
                       Tensor tx = upload(t, x, dt), y = output(t, rows * n, dt);
                       Tensor tw = upload(t, transposed ? transposed_groups(w, groups, n, k) : w, dt);
                       t.backend->grouped_gemm_forward(dt, tx.raw_data(), tw.raw_data(), counts.data(), groups, n, k,
                                                       transposed, y.raw_data());
                       checks.push_back({transposed ? "y (w transposed)" : "y", download(y), want, 4 * tolerance(dt)});
                     }
                     return checks;
                   }});
  cases.push_back({"grouped_gemm_backward", kFloating, [=](const Target& t, DType dt) {
                     Random r("grouped_gemm_backward");
                     const std::vector<double> x = r.values(rows * k, dt), w = r.values(groups * n * k, dt),
                                               g = r.values(rows * n, dt);
                     std::vector<double> want_dx(size_t(rows * k), 0.0), want_dw(size_t(groups * n * k), 0.0);
                     int64_t row = 0;
                     for (int64_t gi = 0; gi < groups; ++gi)
                       for (int64_t i = 0; i < counts[size_t(gi)]; ++i, ++row)
                         for (int64_t j = 0; j < n; ++j)
                           for (int64_t p = 0; p < k; ++p) {
                             const double gv = g[size_t(row * n + j)];
                             want_dx[size_t(row * k + p)] += gv * w[size_t((gi * n + j) * k + p)];
                             want_dw[size_t((gi * n + j) * k + p)] += gv * x[size_t(row * k + p)];
                           }
                     std::vector<Check> checks;
                     for (bool transposed : {false, true}) {
                       Tensor tx = upload(t, x, dt), tg = upload(t, g, dt), dx = output(t, rows * k, dt),
                              dw = output(t, groups * n * k, dt);
                       Tensor tw = upload(t, transposed ? transposed_groups(w, groups, n, k) : w, dt);
                       t.backend->grouped_gemm_backward(dt, tg.raw_data(), tx.raw_data(), tw.raw_data(), counts.data(),
                                                        groups, n, k, transposed, dx.raw_data(), dw.raw_data());
                       const std::string tag = transposed ? " (w transposed)" : "";
                       checks.push_back({"dx" + tag, download(dx), rounded(want_dx, dt), 4 * tolerance(dt)});
                       checks.push_back({"dw" + tag, download(dw),
                                         rounded(transposed ? transposed_groups(want_dw, groups, n, k) : want_dw, dt),
                                         4 * tolerance(dt)});
                     }
                     return checks;
                   }});
}

// GPT-OSS's expert activation over interleaved (gate, up) pairs, with a limit (1.5) inside the inputs' range so that
// both clamps bite (gate above, up on both sides).
void clamped_swiglu_cases(std::vector<Case>& cases) {
  const int64_t n = 40;
  const double alpha = 1.702, limit = 1.5;
  auto sigmoid = [](double x) { return 1 / (1 + std::exp(-x)); };
  for (bool backward : {false, true}) {
    const std::string kernel = backward ? "clamped_swiglu_backward" : "clamped_swiglu_forward";
    cases.push_back({kernel, kFloating, [=](const Target& t, DType dt) {
                       Random r(kernel);
                       const std::vector<double> x = r.values(2 * n, dt, -3, 3), g = r.values(n, dt);
                       std::vector<double> y(static_cast<size_t>(n)), dx(static_cast<size_t>(2 * n));
                       for (int64_t i = 0; i < n; ++i) {
                         const double gate_in = x[size_t(2 * i)], up_in = x[size_t(2 * i + 1)];
                         const double gate = std::min(gate_in, limit), up = std::clamp(up_in, -limit, limit);
                         const double s = sigmoid(alpha * gate), glu = gate * s;
                         y[size_t(i)] = (up + 1) * glu;
                         const double dglu = s + gate * alpha * s * (1 - s);
                         dx[size_t(2 * i)] = gate_in <= limit ? g[size_t(i)] * (up + 1) * dglu : 0;
                         dx[size_t(2 * i + 1)] = std::abs(up_in) <= limit ? g[size_t(i)] * glu : 0;
                       }
                       Tensor tx = upload(t, x, dt);
                       if (!backward) {
                         Tensor out = output(t, n, dt);
                         t.backend->clamped_swiglu_forward(dt, tx.raw_data(), out.raw_data(), n, alpha, limit);
                         return std::vector<Check>{{"y", download(out), y, tolerance(dt)}};
                       }
                       Tensor tg = upload(t, g, dt), out = output(t, 2 * n, dt);
                       t.backend->clamped_swiglu_backward(dt, tx.raw_data(), tg.raw_data(), out.raw_data(), n, alpha,
                                                          limit);
                       return std::vector<Check>{{"dgate_up", download(out), dx, tolerance(dt)}};
                     }});
  }
}

}  // namespace

void moe_cases(std::vector<Case>& cases) {
  topk_cases(cases);
  routing_cases(cases);
  grouped_gemm_cases(cases);
  clamped_swiglu_cases(cases);
}

}  // namespace automodel::backend_test
