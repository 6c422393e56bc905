#include "ops/matmul.h"

#include "ops/backend.h"
#include "ops/cast.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

// The element `elems` elements after `base` in a buffer of `dt` elements.
const void* at(const void* base, int64_t elems, DType dt) {
  return static_cast<const char*>(base) + elems * int64_t(dtype_size(dt));
}

// One operand as the GEMM reads it: the stored matrices of `data` (a detached tensor, possibly a
// contiguous copy), op(stored) = the logical matrix, rows ld apart; batch dims with their strides.
struct Operand {
  Tensor data;
  bool trans = false;
  int64_t ld = 1;
  Shape batch_shape, batch_strides;
};

// x's last two dims are a matrix [R, C] that the op reads as is (t false) or transposed (t true).
// A row-major matrix keeps the flag; a column-major one (a transposed view) flips it and reads the
// same memory; anything else is copied.
Operand make_operand(const Tensor& x, bool t) {
  Operand op;
  Tensor d = x.detach();
  const int64_t n = d.dim(), R = d.shape()[size_t(n - 2)], C = d.shape()[size_t(n - 1)];
  const int64_t sr = d.strides()[size_t(n - 2)], sc = d.strides()[size_t(n - 1)];
  const bool empty = d.numel() == 0;
  if (empty || ((C == 1 || sc == 1) && (R == 1 || sr >= C))) {
    op.trans = t;
    op.ld = (R == 1 || empty) ? std::max<int64_t>(C, 1) : sr;
  } else if ((R == 1 || sr == 1) && (C == 1 || sc >= R)) {
    op.trans = !t;
    op.ld = C == 1 ? std::max<int64_t>(R, 1) : sc;
  } else {
    d = Tensor::empty(d.shape(), d.dtype(), d.device());
    copy_into(d, x.detach());
    op.trans = t;
    op.ld = std::max<int64_t>(C, 1);
  }
  op.data = d;
  op.batch_shape.assign(d.shape().begin(), d.shape().end() - 2);
  op.batch_strides.assign(d.strides().begin(), d.strides().end() - 2);
  return op;
}

// The product's batch: for every output batch index, the element offset of each operand's
// matrix and its linear index in the operand's own batch shape (for gradient reduction).
struct BatchPlan {
  Shape out_batch;
  int64_t count = 1;
  std::vector<int64_t> a_off, b_off, a_lin, b_lin;
  int64_t a_count = 1, b_count = 1;  // matrices in each operand's batch
};

BatchPlan plan_batch(const Operand& a, const Operand& b, const Tensor& ta, const Tensor& tb) {
  BatchPlan p;
  const size_t nd = std::max(a.batch_shape.size(), b.batch_shape.size());
  p.out_batch.assign(nd, 1);
  // Right-aligned per-dim sizes and strides; broadcast dims get stride 0.
  std::vector<int64_t> as(nd, 0), bs(nd, 0), al(nd, 0), bl(nd, 0);
  auto fill = [&](const Operand& o, std::vector<int64_t>& st, std::vector<int64_t>& lin, int64_t& cnt) {
    const size_t k = o.batch_shape.size();
    int64_t l = 1;
    for (size_t i = k; i-- > 0;) {
      const size_t j = nd - k + i;
      if (o.batch_shape[i] != 1) {
        st[j] = o.batch_strides[i];
        lin[j] = l;
      }
      l *= o.batch_shape[i];
    }
    cnt = l;
  };
  fill(a, as, al, p.a_count);
  fill(b, bs, bl, p.b_count);
  for (size_t j = 0; j < nd; ++j) {
    const int64_t da = j + a.batch_shape.size() >= nd ? a.batch_shape[j + a.batch_shape.size() - nd] : 1;
    const int64_t db = j + b.batch_shape.size() >= nd ? b.batch_shape[j + b.batch_shape.size() - nd] : 1;
    if (da != db && da != 1 && db != 1)
      throw Error(detail::str("matmul: batch dims of a ", ta.describe(), " and b ", tb.describe(),
                              " do not broadcast (", da, " vs ", db, " in batch dim ", j, ")"),
                  "matmul", "batch dims must be equal or 1 (or missing on one side)");
    p.out_batch[j] = da == 1 ? db : da;
  }
  p.count = shape_numel(p.out_batch);
  p.a_off.resize(size_t(p.count));
  p.b_off.resize(size_t(p.count));
  p.a_lin.resize(size_t(p.count));
  p.b_lin.resize(size_t(p.count));
  std::vector<int64_t> idx(nd, 0);
  int64_t ao = 0, bo = 0, ali = 0, bli = 0;
  for (int64_t i = 0; i < p.count; ++i) {
    p.a_off[size_t(i)] = ao, p.b_off[size_t(i)] = bo, p.a_lin[size_t(i)] = ali, p.b_lin[size_t(i)] = bli;
    for (size_t j = nd; j-- > 0;) {  // odometer step, updating the offsets incrementally
      ao += as[j], bo += bs[j], ali += al[j], bli += bl[j];
      if (++idx[j] < p.out_batch[j]) break;
      ao -= as[j] * idx[j], bo -= bs[j] * idx[j], ali -= al[j] * idx[j], bli -= bl[j] * idx[j];
      idx[j] = 0;
    }
  }
  return p;
}

bool all_equal(const std::vector<int64_t>& v) {
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] != v[0]) return false;
  return true;
}
bool is_identity(const std::vector<int64_t>& v) {
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i] != int64_t(i)) return false;
  return true;
}
bool is_progression(const std::vector<int64_t>& v, int64_t step) {
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] - v[i - 1] != step) return false;
  return true;
}

// C[c_lin[i]] (+)= op(A_i) @ op(B_i) over the batch, where several i may share one C matrix (a
// broadcast operand's gradient): such sums run in rounds, the first with beta = 0, the rest
// accumulating with beta = 1, each round one batched GEMM over distinct C matrices. C (a tensor of
// dtype dt) has c_count contiguous [M, N] matrices. bf16 sums accumulate in an fp32 buffer, rounded once.
void gemm_reduce(const kernels::Backend& be, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void* A,
                 const std::vector<int64_t>& a_off, int64_t lda, const void* B, const std::vector<int64_t>& b_off,
                 int64_t ldb, const Tensor& C, const std::vector<int64_t>& c_lin, int64_t c_count) {
  const DType dt = C.dtype();
  const int64_t count = int64_t(c_lin.size());
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(c_count));
  for (int64_t i = 0; i < count; ++i) members[size_t(c_lin[size_t(i)])].push_back(i);
  size_t rounds = 0;
  for (auto& m : members) rounds = std::max(rounds, m.size());
  auto run = [&](const Tensor& out) {
    for (size_t r = 0; r < rounds; ++r) {
      std::vector<int64_t> ao, bo, co;
      for (int64_t c = 0; c < c_count; ++c) {
        const auto& m = members[size_t(c)];
        if (r >= m.size()) continue;
        ao.push_back(a_off[size_t(m[r])]);
        bo.push_back(b_off[size_t(m[r])]);
        co.push_back(c * M * N);
      }
      be.gemm_batched(dt, out.dtype(), ta, tb, M, N, K, 1.0, A, ao.data(), lda, B, bo.data(), ldb, r == 0 ? 0.0 : 1.0,
                      out.raw_data(), co.data(), N, int64_t(ao.size()));
    }
  };
  if (dt == DType::bf16 && rounds > 1) {
    Tensor acc = Tensor::empty({c_count * M * N}, DType::f32, C.device());
    run(acc);
    be.cast(acc.raw_data(), DType::f32, C.raw_data(), DType::bf16, acc.numel());
    return;
  }
  run(C);
}

// The logical matrices of a batched product: a [.., M, K], b [.., K, N] after the flags.
struct Dims {
  int64_t M, N, K;
};

struct MatmulBackward : Node {
  Operand a, b;
  BatchPlan plan;
  Dims dims{};
  bool ta = false, tb = false;
  Shape a_shape, b_shape;
  std::string name() const override { return "MatmulBackward"; }
  void release_saved() override {
    a.data = Tensor();
    b.data = Tensor();
  }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    Tensor g = grads[0];
    const bool need_a = next_edges[0].fn != nullptr, need_b = next_edges[1].fn != nullptr;
    if (!g.defined() || (!need_a && !need_b)) return {Tensor(), Tensor()};
    const DType dt = outputs[0].dtype;
    NoGradGuard no_grad;
    if (g.dtype() != dt) g = to_dtype(g, dt);
    if (!g.is_contiguous()) g = contiguous(g);
    const kernels::Backend& be = backend_of("matmul backward", g, a.data, b.data);
    Tensor ga, gb;
    if (need_a) ga = plan.count == 0 ? Tensor::zeros(a_shape, dt, g.device()) : Tensor::empty(a_shape, dt, g.device());
    if (need_b) gb = plan.count == 0 ? Tensor::zeros(b_shape, dt, g.device()) : Tensor::empty(b_shape, dt, g.device());
    if (plan.count == 0) return {ga, gb};
    dispatch_floating(dt, "matmul backward", [](auto) {});
    const auto [M, N, K] = dims;
    const int64_t cnt = plan.count;
    const void* G = g.raw_data();
    std::vector<int64_t> g_off(static_cast<size_t>(cnt));
    for (int64_t i = 0; i < cnt; ++i) g_off[size_t(i)] = i * M * N;
    const bool b_shared = all_equal(plan.b_off) && all_equal(plan.b_lin);
    if (need_a) {
      const void* B = b.data.raw_data();
      if (!ta && b_shared && is_identity(plan.a_lin)) {
        // dA [cnt*M, K] = G [cnt*M, N] @ op(B)^T in one GEMM.
        be.gemm(dt, dt, false, !b.trans, cnt * M, K, N, 1.0, G, N, at(B, plan.b_off[0], dt), b.ld, 0.0, ga.raw_data(),
                K, nullptr);
      } else if (!ta) {  // dA_i [M, K] = G_i @ op(B_i)^T
        gemm_reduce(be, false, !b.trans, M, K, N, G, g_off, N, B, plan.b_off, b.ld, ga, plan.a_lin, plan.a_count);
      } else {  // dA_i [K, M] = op(B_i) @ G_i^T
        gemm_reduce(be, b.trans, true, K, M, N, B, plan.b_off, b.ld, G, g_off, N, ga, plan.a_lin, plan.a_count);
      }
    }
    if (need_b) {
      const void* A = a.data.raw_data();
      // op(A) for every batch stacked as one [cnt*M, K] row-major matrix: sum_i op(A_i)^T G_i folds.
      const bool a_stacked = !a.trans && (cnt == 1 || is_progression(plan.a_off, M * a.ld));
      const bool fold = b_shared && (a_stacked || cnt == 1);
      if (fold && !tb) {  // dB [K, N] = op(A)^T @ G over all rows
        be.gemm(dt, dt, !a.trans, false, K, N, cnt * M, 1.0, at(A, plan.a_off[0], dt), a.ld, G, N, 0.0, gb.raw_data(),
                N, nullptr);
      } else if (fold) {  // dB [N, K] = G^T @ op(A)
        be.gemm(dt, dt, true, a.trans, N, K, cnt * M, 1.0, G, N, at(A, plan.a_off[0], dt), a.ld, 0.0, gb.raw_data(), K,
                nullptr);
      } else if (!tb) {  // dB_i [K, N] = op(A_i)^T @ G_i
        gemm_reduce(be, !a.trans, false, K, N, M, A, plan.a_off, a.ld, G, g_off, N, gb, plan.b_lin, plan.b_count);
      } else {  // dB_i [N, K] = G_i^T @ op(A_i)
        gemm_reduce(be, true, a.trans, N, K, M, G, g_off, N, A, plan.a_off, a.ld, gb, plan.b_lin, plan.b_count);
      }
    }
    return {ga, gb};
  }
};

struct LinearBackward : Node {
  Tensor x;       // detached, contiguous [rows, in]
  Operand w;      // weight read as op(stored) = W^T [in, out]
  Tensor w_leaf;  // the weight when it is a leaf that requires grad: dW may be accumulated straight into its .grad
  int64_t rows = 0, in = 0, out = 0;
  Shape x_shape, w_shape;
  bool has_bias = false;
  std::string name() const override { return "LinearBackward"; }
  void release_saved() override {
    x = Tensor();
    w.data = Tensor();
    w_leaf = Tensor();
  }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    Tensor g = grads[0];
    const bool need_x = next_edges[0].fn != nullptr, need_w = next_edges[1].fn != nullptr;
    const bool need_b = has_bias && next_edges[2].fn != nullptr;
    if (!g.defined()) return {Tensor(), Tensor(), Tensor()};
    const DType dt = outputs[0].dtype;
    NoGradGuard no_grad;
    if (g.dtype() != dt) g = to_dtype(g, dt);
    if (!g.is_contiguous()) g = contiguous(g);
    const kernels::Backend& be = backend_of("linear backward", g, x, w.data);
    Tensor gx, gw, gbias;
    if (need_x) gx = Tensor::empty(x_shape, dt, g.device());
    // A weight whose .grad buffer exists (e.g. a view of a flat gradient buffer) takes dW through the GEMM's
    // beta = 1, which saves a temporary and a pass over it; the accumulator then gets no gradient to add.
    Tensor w_grad = w_leaf.defined() ? w_leaf.grad() : Tensor();
    const bool w_in_place =
        need_w && w_grad.defined() && w_grad.is_contiguous() && w_grad.dtype() == dt && w_grad.shape() == w_shape;
    if (need_w) gw = w_in_place ? w_grad : Tensor::empty(w_shape, dt, g.device());
    if (need_b) gbias = rows == 0 ? Tensor::zeros({out}, dt, g.device()) : Tensor::empty({out}, dt, g.device());
    dispatch_floating(dt, "linear backward", [](auto) {});
    const void* G = g.raw_data();
    // dx [rows, in] = G [rows, out] @ W [out, in]
    if (need_x)
      be.gemm(dt, dt, false, !w.trans, rows, in, out, 1.0, G, out, w.data.raw_data(), w.ld, 0.0, gx.raw_data(), in,
              nullptr);
    // dW [out, in] = G^T @ x
    if (need_w)
      be.gemm(dt, dt, true, false, out, in, rows, 1.0, G, out, x.raw_data(), in, w_in_place ? 1.0 : 0.0, gw.raw_data(),
              in, nullptr);
    if (need_b && rows > 0) be.column_sums(dt, G, rows, out, out, gbias.raw_data(), false);
    return {gx, w_in_place ? Tensor() : gw, gbias};
  }
};

void check_matrix_input(const Tensor& t, const char* op, const char* arg) {
  check_defined(t, op, arg);
  if (t.dim() < 2)
    throw Error(detail::str(op, ": argument '", arg, "' must have rank >= 2, got ", t.describe()), op,
                "add a leading dim with ops::unsqueeze");
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  check_matrix_input(a, "matmul", "a");
  check_matrix_input(b, "matmul", "b");
  const kernels::Backend& be = backend_of("matmul", a, b);
  check_same_dtype(a, b, "matmul");
  const int64_t M = transpose_a ? a.size(-1) : a.size(-2), Ka = transpose_a ? a.size(-2) : a.size(-1);
  const int64_t Kb = transpose_b ? b.size(-1) : b.size(-2), N = transpose_b ? b.size(-2) : b.size(-1);
  if (Ka != Kb)
    throw Error(detail::str("matmul: inner dims differ: a ", a.describe(), transpose_a ? " (transposed)" : "",
                            " has K=", Ka, ", b ", b.describe(), transpose_b ? " (transposed)" : "", " has K=", Kb),
                "matmul",
                "a's last dim (its second-last with transpose_a) must equal b's second-last (last with "
                "transpose_b)");
  const int64_t K = Ka;
  Tensor out;
  Operand oa, ob;
  BatchPlan plan;
  const DType dt = a.dtype();
  dispatch_floating(dt, "matmul", [](auto) {});
  oa = make_operand(a, transpose_a);
  ob = make_operand(b, transpose_b);
  plan = plan_batch(oa, ob, a, b);
  Shape shape = plan.out_batch;
  shape.push_back(M);
  shape.push_back(N);
  out = Tensor::empty(shape, dt, a.device());
  if (plan.count > 0 && M > 0 && N > 0) {
    const void* A = oa.data.raw_data();
    const void* B = ob.data.raw_data();
    const bool b_shared = all_equal(plan.b_off);
    if (plan.count == 1 || (b_shared && !oa.trans && is_progression(plan.a_off, M * oa.ld))) {
      // Every batch's rows of a evenly spaced and one b: a single [count*M, K] @ [K, N] GEMM.
      be.gemm(dt, dt, oa.trans, ob.trans, plan.count * M, N, K, 1.0, at(A, plan.a_off[0], dt), oa.ld,
              at(B, plan.b_off[0], dt), ob.ld, 0.0, out.raw_data(), N, nullptr);
    } else {
      std::vector<int64_t> c_off(static_cast<size_t>(plan.count));
      for (int64_t i = 0; i < plan.count; ++i) c_off[size_t(i)] = i * M * N;
      be.gemm_batched(dt, dt, oa.trans, ob.trans, M, N, K, 1.0, A, plan.a_off.data(), oa.ld, B, plan.b_off.data(),
                      ob.ld, 0.0, out.raw_data(), c_off.data(), N, plan.count);
    }
  }
  if (needs_grad(a, b)) {
    auto node = std::make_shared<MatmulBackward>();
    record(node, {a, b}, {out});
    node->dims = {M, N, K};
    node->ta = transpose_a;
    node->tb = transpose_b;
    node->a_shape = a.shape();
    node->b_shape = b.shape();
    node->plan = std::move(plan);
    // dA needs b, dB needs a.
    if (node->next_edges[1].fn) node->a = std::move(oa);
    if (node->next_edges[0].fn) node->b = std::move(ob);
  }
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_defined(x, "linear", "x");
  check_defined(weight, "linear", "weight");
  const kernels::Backend& be = backend_of("linear", x, weight, bias);
  check_same_dtype(x, weight, "linear");
  if (weight.dim() != 2)
    throw Error(detail::str("linear: weight must be [out, in], got ", weight.describe()), "linear");
  if (x.dim() < 1) throw Error(detail::str("linear: x must have rank >= 1, got ", x.describe()), "linear");
  const int64_t out_f = weight.size(0), in_f = weight.size(1);
  if (x.size(-1) != in_f)
    throw Error(detail::str("linear: x ", x.describe(), " has ", x.size(-1), " features but weight ", weight.describe(),
                            " expects ", in_f),
                "linear", "x's last dim must equal weight's second dim (weight is [out, in])");
  Tensor bc;
  if (bias.defined()) {
    check_same_dtype(x, bias, "linear");
    if (bias.dim() != 1 || bias.size(0) != out_f)
      throw Error(detail::str("linear: bias ", bias.describe(), " does not match weight ", weight.describe(),
                              " (expected [", out_f, "])"),
                  "linear");
    bc = bias.is_contiguous() ? bias.detach() : contiguous(bias.detach());
  }
  Tensor xc = x.is_contiguous() ? x.detach() : contiguous(x.detach());
  const int64_t rows = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  Operand w = make_operand(weight, true);  // op(stored) = W^T [in, out]
  Shape shape = x.shape();
  shape.back() = out_f;
  dispatch_floating(x.dtype(), "linear", [](auto) {});
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  be.gemm(x.dtype(), x.dtype(), false, w.trans, rows, out_f, in_f, 1.0, xc.raw_data(), std::max<int64_t>(in_f, 1),
          w.data.raw_data(), w.ld, 0.0, out.raw_data(), std::max<int64_t>(out_f, 1),
          bc.defined() ? bc.raw_data() : nullptr);
  if (needs_grad(x, weight, bias)) {
    auto node = std::make_shared<LinearBackward>();
    record(node, {x, weight, bias}, {out});
    node->rows = rows, node->in = in_f, node->out = out_f;
    node->x_shape = x.shape();
    node->w_shape = weight.shape();
    node->has_bias = bias.defined();
    if (node->next_edges[1].fn) node->x = xc;  // dW needs x
    if (node->next_edges[0].fn) node->w = w;   // dx needs W
    if (node->next_edges[1].fn && weight.is_leaf()) node->w_leaf = weight;
  }
  return out;
}

}  // namespace automodel::ops
