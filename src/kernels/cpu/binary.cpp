#include "kernels/cpu/binary.h"

#include <algorithm>
#include <array>
#include <vector>

#include "core/threads.h"

namespace automodel::cpu {

namespace {

constexpr int64_t kGrain = 1 << 15;  // elements below which a loop stays serial

// The iteration space of an elementwise op with a contiguous output and N strided inputs, with
// size-1 dims dropped and dims merged wherever every input allows it.
template <int N>
struct Layout {
  std::vector<int64_t> size;
  std::vector<std::array<int64_t, N>> stride;  // per dim, one stride per input
};

template <int N>
Layout<N> coalesce(const int64_t* shape, int ndim, const std::array<const int64_t*, N>& strides) {
  Layout<N> l;
  for (int d = 0; d < ndim; ++d) {
    if (shape[d] == 1) continue;
    std::array<int64_t, N> st;
    for (int k = 0; k < N; ++k) st[size_t(k)] = strides[size_t(k)][d];
    if (!l.size.empty()) {
      bool mergeable = true;
      for (int k = 0; k < N; ++k) mergeable = mergeable && l.stride.back()[size_t(k)] == st[size_t(k)] * shape[d];
      if (mergeable) {
        l.size.back() *= shape[d];
        l.stride.back() = st;
        continue;
      }
    }
    l.size.push_back(shape[d]);
    l.stride.push_back(st);
  }
  if (l.size.empty()) {
    l.size.push_back(1);
    l.stride.push_back({});
  }
  return l;
}

// Calls body(out_pos, offsets, inner_strides, count) for runs along the innermost dim, splitting
// the flat output range across threads (so one long row is split as well as many short ones).
template <int N, class Body>
void strided_loop(const int64_t* shape, int ndim, const std::array<const int64_t*, N>& strides, Body&& body) {
  int64_t total = 1;
  for (int d = 0; d < ndim; ++d) total *= shape[d];
  if (total == 0) return;
  const Layout<N> l = coalesce<N>(shape, ndim, strides);
  const int nd = int(l.size.size());
  const int64_t inner = l.size.back();
  const std::array<int64_t, N> inner_st = l.stride.back();
  parallel_for(total, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> idx(size_t(nd), 0);
    std::array<int64_t, N> off{};
    int64_t rem = begin;
    for (int d = nd - 1; d >= 0; --d) {
      idx[size_t(d)] = rem % l.size[size_t(d)];
      rem /= l.size[size_t(d)];
      for (int k = 0; k < N; ++k) off[size_t(k)] += idx[size_t(d)] * l.stride[size_t(d)][size_t(k)];
    }
    int64_t pos = begin;
    while (pos < end) {
      const int64_t j = idx[size_t(nd - 1)];
      const int64_t count = std::min(inner - j, end - pos);
      body(pos, off, inner_st, count);
      pos += count;
      if (pos >= end) break;
      // count reached the end of the inner run: move to the next row.
      for (int k = 0; k < N; ++k) off[size_t(k)] -= j * inner_st[size_t(k)];
      idx[size_t(nd - 1)] = 0;
      for (int d = nd - 2; d >= 0; --d) {
        const auto& st = l.stride[size_t(d)];
        if (++idx[size_t(d)] < l.size[size_t(d)]) {
          for (int k = 0; k < N; ++k) off[size_t(k)] += st[size_t(k)];
          break;
        }
        for (int k = 0; k < N; ++k) off[size_t(k)] -= (l.size[size_t(d)] - 1) * st[size_t(k)];
        idx[size_t(d)] = 0;
      }
    }
  });
}

// o[i] = f(a[i * sa], b[i * sb]) with the common stride patterns vectorised.
template <class T, class O, class F>
inline void binary_run(const T* a, int64_t sa, const T* b, int64_t sb, O* o, int64_t n, F f) {
  if (sa == 1 && sb == 1) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) o[i] = from_compute<O>(f(to_compute(a[i]), to_compute(b[i])));
  } else if (sa == 1 && sb == 0) {
    const auto bv = to_compute(b[0]);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) o[i] = from_compute<O>(f(to_compute(a[i]), bv));
  } else if (sa == 0 && sb == 1) {
    const auto av = to_compute(a[0]);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) o[i] = from_compute<O>(f(av, to_compute(b[i])));
  } else {
    for (int64_t i = 0; i < n; ++i) o[i] = from_compute<O>(f(to_compute(a[i * sa]), to_compute(b[i * sb])));
  }
}

template <class T, class F>
void flat_impl(const T* a, const T* b, T* out, int64_t n, F f) {
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    binary_run(a + begin, 1, b + begin, 1, out + begin, end - begin, f);
  });
}

template <class T, class O, class F>
void strided_impl(const T* a, const int64_t* as, const T* b, const int64_t* bs, O* out, const int64_t* shape, int ndim,
                  F f) {
  strided_loop<2>(shape, ndim, {as, bs},
                  [&](int64_t pos, const std::array<int64_t, 2>& off, const std::array<int64_t, 2>& st, int64_t count) {
                    binary_run(a + off[0], st[0], b + off[1], st[1], out + pos, count, f);
                  });
}

// Runs impl(f) with f the scalar function of `op` in compute type C.
template <class C, class Impl>
void with_op(BinaryOp op, Impl&& impl) {
  switch (op) {
    case BinaryOp::add: impl([](C x, C y) { return x + y; }); return;
    case BinaryOp::sub: impl([](C x, C y) { return x - y; }); return;
    case BinaryOp::mul: impl([](C x, C y) { return x * y; }); return;
    case BinaryOp::div: impl([](C x, C y) { return x / y; }); return;
  }
}

template <class T>
void forward_flat(BinaryOp op, const T* a, const T* b, T* out, int64_t n) {
  with_op<compute_t<T>>(op, [&](auto f) { flat_impl(a, b, out, n, f); });
}

template <class T>
void forward_strided(BinaryOp op, const T* a, const int64_t* as, const T* b, const int64_t* bs, T* out,
                     const int64_t* shape, int ndim) {
  with_op<compute_t<T>>(op, [&](auto f) { strided_impl(a, as, b, bs, out, shape, ndim, f); });
}

template <class T>
void scale_impl(const T* x, double factor, T* out, int64_t n) {
  using C = compute_t<T>;
  const C f = C(factor);
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) out[i] = from_compute<T>(to_compute(x[i]) * f);
  });
}

// O is T, or float for a bf16 gradient that is summed further before rounding.
template <class T, class O>
void backward_impl(BinaryOp op, int which, const T* g, const T* a, const int64_t* as, const T* b, const int64_t* bs,
                   O* grad, const int64_t* shape, int ndim) {
  using C = compute_t<T>;
  std::vector<int64_t> gs(static_cast<size_t>(ndim));
  int64_t s = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    gs[size_t(d)] = s;
    s *= shape[d];
  }
  if (op == BinaryOp::mul) {
    const T* other = which == 0 ? b : a;
    const int64_t* os = which == 0 ? bs : as;
    strided_impl(g, gs.data(), other, os, grad, shape, ndim, [](C x, C y) { return x * y; });
  } else if (op == BinaryOp::div && which == 0) {
    strided_impl(g, gs.data(), b, bs, grad, shape, ndim, [](C x, C y) { return x / y; });
  } else if (op == BinaryOp::div) {
    strided_loop<3>(
        shape, ndim, {gs.data(), as, bs},
        [&](int64_t pos, const std::array<int64_t, 3>& off, const std::array<int64_t, 3>& st, int64_t count) {
          const T* gp = g + off[0];
          const T* ap = a + off[1];
          const T* bp = b + off[2];
          O* o = grad + pos;
          if (st[1] == 1 && st[2] == 1) {
#pragma omp simd
            for (int64_t i = 0; i < count; ++i) {
              C bv = to_compute(bp[i]);
              o[i] = from_compute<O>(-to_compute(gp[i]) * to_compute(ap[i]) / (bv * bv));
            }
          } else {
            for (int64_t i = 0; i < count; ++i) {
              C bv = to_compute(bp[i * st[2]]);
              o[i] = from_compute<O>(-to_compute(gp[i]) * to_compute(ap[i * st[1]]) / (bv * bv));
            }
          }
        });
  } else {  // add / sub: g or -g
    const C f = op == BinaryOp::sub && which == 1 ? C(-1) : C(1);
    parallel_for(s, kGrain, [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) grad[i] = from_compute<O>(to_compute(g[i]) * f);
    });
  }
}

}  // namespace

void binary_forward(BinaryOp op, const float* a, const float* b, float* out, int64_t n) {
  forward_flat(op, a, b, out, n);
}
void binary_forward(BinaryOp op, const double* a, const double* b, double* out, int64_t n) {
  forward_flat(op, a, b, out, n);
}
void binary_forward(BinaryOp op, const bf16* a, const bf16* b, bf16* out, int64_t n) { forward_flat(op, a, b, out, n); }

void binary_forward_strided(BinaryOp op, const float* a, const int64_t* as, const float* b, const int64_t* bs,
                            float* out, const int64_t* shape, int ndim) {
  forward_strided(op, a, as, b, bs, out, shape, ndim);
}
void binary_forward_strided(BinaryOp op, const double* a, const int64_t* as, const double* b, const int64_t* bs,
                            double* out, const int64_t* shape, int ndim) {
  forward_strided(op, a, as, b, bs, out, shape, ndim);
}
void binary_forward_strided(BinaryOp op, const bf16* a, const int64_t* as, const bf16* b, const int64_t* bs, bf16* out,
                            const int64_t* shape, int ndim) {
  forward_strided(op, a, as, b, bs, out, shape, ndim);
}

void binary_backward(BinaryOp op, int which, const float* g, const float* a, const int64_t* as, const float* b,
                     const int64_t* bs, float* grad, const int64_t* shape, int ndim) {
  backward_impl(op, which, g, a, as, b, bs, grad, shape, ndim);
}
void binary_backward(BinaryOp op, int which, const double* g, const double* a, const int64_t* as, const double* b,
                     const int64_t* bs, double* grad, const int64_t* shape, int ndim) {
  backward_impl(op, which, g, a, as, b, bs, grad, shape, ndim);
}
void binary_backward(BinaryOp op, int which, const bf16* g, const bf16* a, const int64_t* as, const bf16* b,
                     const int64_t* bs, bf16* grad, const int64_t* shape, int ndim) {
  backward_impl(op, which, g, a, as, b, bs, grad, shape, ndim);
}

void binary_backward(BinaryOp op, int which, const bf16* g, const bf16* a, const int64_t* as, const bf16* b,
                     const int64_t* bs, float* grad, const int64_t* shape, int ndim) {
  backward_impl(op, which, g, a, as, b, bs, grad, shape, ndim);
}

void scale_forward(const float* x, double factor, float* out, int64_t n) { scale_impl(x, factor, out, n); }
void scale_forward(const double* x, double factor, double* out, int64_t n) { scale_impl(x, factor, out, n); }
void scale_forward(const bf16* x, double factor, bf16* out, int64_t n) { scale_impl(x, factor, out, n); }

}  // namespace automodel::cpu
