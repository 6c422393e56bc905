#include "ops/activation.h"

#include <cmath>

#include "kernels/cpu/activation.h"
#include "ops/dispatch.h"
#include "ops/graph.h"
#include "ops/view.h"

namespace automodel::ops {

namespace {

enum class Act { silu, gelu_erf, gelu_tanh, softcap, rsqrt };

const char* act_name(Act a) {
  switch (a) {
    case Act::silu: return "silu";
    case Act::gelu_erf: return "gelu";
    case Act::gelu_tanh: return "gelu";
    case Act::softcap: return "softcap";
    case Act::rsqrt: return "rsqrt";
  }
  return "activation";
}

template <class T>
void act_forward(Act a, const T* x, T* y, int64_t n, double cap) {
  switch (a) {
    case Act::silu: cpu::silu_forward(x, y, n); return;
    case Act::gelu_erf: cpu::gelu_forward(x, y, n, false); return;
    case Act::gelu_tanh: cpu::gelu_forward(x, y, n, true); return;
    case Act::softcap: cpu::softcap_forward(x, y, n, cap); return;
    case Act::rsqrt: cpu::rsqrt_forward(x, y, n); return;
  }
}

template <class T>
void act_backward(Act a, const T* x, const T* g, T* gx, int64_t n, double cap) {
  switch (a) {
    case Act::silu: cpu::silu_backward(x, g, gx, n); return;
    case Act::gelu_erf: cpu::gelu_backward(x, g, gx, n, false); return;
    case Act::gelu_tanh: cpu::gelu_backward(x, g, gx, n, true); return;
    case Act::softcap: cpu::softcap_backward(x, g, gx, n, cap); return;
    case Act::rsqrt: cpu::rsqrt_backward(x, g, gx, n); return;
  }
}

struct UnaryBackward : Node {
  Act act;
  double cap = 0;
  Tensor x;  // the saved (contiguous, detached) input
  std::string name() const override {
    switch (act) {
      case Act::silu: return "SiluBackward";
      case Act::gelu_erf: return "GeluBackward";
      case Act::gelu_tanh: return "GeluTanhBackward";
      case Act::softcap: return "SoftcapBackward";
      case Act::rsqrt: return "RsqrtBackward";
    }
    return "ActivationBackward";
  }
  void release_saved() override { x = Tensor(); }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(x.defined(), name(), ": saved input already released (backward run twice without retain_graph?)");
    Tensor g = contiguous(grads[0]);
    Tensor gx = Tensor::empty(x.shape(), x.dtype());
    dispatch_floating(x.dtype(), act_name(act), [&](auto tag) {
      using T = decltype(tag);
      act_backward(act, x.data<T>(), g.data<T>(), gx.data<T>(), x.numel(), cap);
    });
    return {gx};
  }
};

Tensor unary(Act act, const Tensor& x, double cap = 0) {
  const char* name = act_name(act);
  check_defined(x, name, "x");
  check_cpu(x, name);
  Tensor xc = contiguous(x);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_floating(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    act_forward(act, xc.data<T>(), y.data<T>(), xc.numel(), cap);
  });
  if (needs_grad(xc)) {
    auto node = std::make_shared<UnaryBackward>();
    node->act = act;
    node->cap = cap;
    node->x = xc.detach();
    record(node, {xc}, {y});
  }
  return y;
}

// act(gate) * up in one pass; the backward recomputes act from the saved gate.
struct GatedBackward : Node {
  bool gelu;  // geglu_tanh, else swiglu
  Tensor gate, up;
  std::string name() const override { return gelu ? "GegluTanhBackward" : "SwigluBackward"; }
  void release_saved() override {
    gate = Tensor();
    up = Tensor();
  }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    AM_CHECK(gate.defined(), name(), ": saved inputs already released (backward run twice without retain_graph?)");
    Tensor g = contiguous(grads[0]);
    Tensor ggate, gup;
    if (next_edges[0].fn) ggate = Tensor::empty(gate.shape(), gate.dtype());
    if (next_edges[1].fn) gup = Tensor::empty(up.shape(), up.dtype());
    dispatch_floating(gate.dtype(), gelu ? "geglu_tanh" : "swiglu", [&](auto tag) {
      using T = decltype(tag);
      T* pg = ggate.defined() ? ggate.data<T>() : nullptr;
      T* pu = gup.defined() ? gup.data<T>() : nullptr;
      if (gelu)
        cpu::geglu_tanh_backward(gate.data<T>(), up.data<T>(), g.data<T>(), pg, pu, gate.numel());
      else
        cpu::swiglu_backward(gate.data<T>(), up.data<T>(), g.data<T>(), pg, pu, gate.numel());
    });
    return {ggate, gup};
  }
};

Tensor gated(bool gelu, const Tensor& gate, const Tensor& up) {
  const char* name = gelu ? "geglu_tanh" : "swiglu";
  check_defined(gate, name, "gate");
  check_defined(up, name, "up");
  check_cpu(gate, name);
  check_cpu(up, name);
  check_same_dtype(gate, up, name);
  if (gate.shape() != up.shape())
    throw Error(detail::str(name, ": gate ", gate.describe(), " and up ", up.describe(), " differ in shape"), name,
                "gate and up must have the same shape (the two halves of the MLP's input projection)");
  Tensor gc = contiguous(gate), uc = contiguous(up);
  Tensor y = Tensor::empty(gate.shape(), gate.dtype());
  dispatch_floating(gate.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    if (gelu)
      cpu::geglu_tanh_forward(gc.data<T>(), uc.data<T>(), y.data<T>(), y.numel());
    else
      cpu::swiglu_forward(gc.data<T>(), uc.data<T>(), y.data<T>(), y.numel());
  });
  if (needs_grad(gc, uc)) {
    auto node = std::make_shared<GatedBackward>();
    node->gelu = gelu;
    node->gate = gc.detach();
    node->up = uc.detach();
    record(node, {gc, uc}, {y});
  }
  return y;
}

}  // namespace

Tensor silu(const Tensor& x) { return unary(Act::silu, x); }
Tensor gelu(const Tensor& x, bool tanh_approximation) {
  return unary(tanh_approximation ? Act::gelu_tanh : Act::gelu_erf, x);
}
Tensor swiglu(const Tensor& gate, const Tensor& up) { return gated(false, gate, up); }
Tensor geglu_tanh(const Tensor& gate, const Tensor& up) { return gated(true, gate, up); }
Tensor rsqrt(const Tensor& x) { return unary(Act::rsqrt, x); }
Tensor softcap(const Tensor& x, double cap) {
  if (!(cap > 0) || !std::isfinite(cap))
    throw Error(detail::str("softcap: cap must be a positive finite number, got ", cap), "softcap",
                "use e.g. 50.0 (Gemma 2 attention) or 30.0 (final logits)");
  return unary(Act::softcap, x, cap);
}

}  // namespace automodel::ops
