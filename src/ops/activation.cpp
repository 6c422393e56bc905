#include "ops/activation.h"

#include <cmath>

#include "ops/backend.h"
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

void act_forward(const kernels::Backend& be, Act a, DType dt, const void* x, void* y, int64_t n, double cap) {
  switch (a) {
    case Act::silu: be.silu_forward(dt, x, y, n); return;
    case Act::gelu_erf: be.gelu_forward(dt, x, y, n, false); return;
    case Act::gelu_tanh: be.gelu_forward(dt, x, y, n, true); return;
    case Act::softcap: be.softcap_forward(dt, x, y, n, cap); return;
    case Act::rsqrt: be.rsqrt_forward(dt, x, y, n); return;
  }
}

void act_backward(const kernels::Backend& be, Act a, DType dt, const void* x, const void* g, void* gx, int64_t n,
                  double cap) {
  switch (a) {
    case Act::silu: be.silu_backward(dt, x, g, gx, n); return;
    case Act::gelu_erf: be.gelu_backward(dt, x, g, gx, n, false); return;
    case Act::gelu_tanh: be.gelu_backward(dt, x, g, gx, n, true); return;
    case Act::softcap: be.softcap_backward(dt, x, g, gx, n, cap); return;
    case Act::rsqrt: be.rsqrt_backward(dt, x, g, gx, n); return;
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
    AM_CHECK(g.dtype() == x.dtype() && g.shape() == x.shape(), name(), ": gradient ", g.describe(), " for ",
             x.describe());
    const kernels::Backend& be = backend_of(act_name(act), x, g);
    Tensor gx = Tensor::empty(x.shape(), x.dtype(), x.device());
    act_backward(be, act, x.dtype(), x.raw_data(), g.raw_data(), gx.raw_data(), x.numel(), cap);
    return {gx};
  }
};

Tensor unary(Act act, const Tensor& x, double cap = 0) {
  const char* name = act_name(act);
  check_defined(x, name, "x");
  const kernels::Backend& be = backend_of(name, x);
  dispatch_floating(x.dtype(), name, [](auto) {});
  Tensor xc = contiguous(x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  act_forward(be, act, x.dtype(), xc.raw_data(), y.raw_data(), xc.numel(), cap);
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
    AM_CHECK(g.dtype() == gate.dtype() && g.shape() == gate.shape(), name(), ": gradient ", g.describe(), " for ",
             gate.describe());
    const kernels::Backend& be = backend_of(gelu ? "geglu_tanh" : "swiglu", gate, up, g);
    Tensor ggate, gup;
    if (next_edges[0].fn) ggate = Tensor::empty(gate.shape(), gate.dtype(), gate.device());
    if (next_edges[1].fn) gup = Tensor::empty(up.shape(), up.dtype(), up.device());
    void* pg = ggate.defined() ? ggate.raw_data() : nullptr;
    void* pu = gup.defined() ? gup.raw_data() : nullptr;
    auto kernel = gelu ? be.geglu_tanh_backward : be.swiglu_backward;
    kernel(gate.dtype(), gate.raw_data(), up.raw_data(), g.raw_data(), pg, pu, gate.numel());
    return {ggate, gup};
  }
};

Tensor gated(bool gelu, const Tensor& gate, const Tensor& up) {
  const char* name = gelu ? "geglu_tanh" : "swiglu";
  check_defined(gate, name, "gate");
  check_defined(up, name, "up");
  const kernels::Backend& be = backend_of(name, gate, up);
  check_same_dtype(gate, up, name);
  if (gate.shape() != up.shape())
    throw Error(detail::str(name, ": gate ", gate.describe(), " and up ", up.describe(), " differ in shape"), name,
                "gate and up must have the same shape (the two halves of the MLP's input projection)");
  dispatch_floating(gate.dtype(), name, [](auto) {});
  Tensor gc = contiguous(gate), uc = contiguous(up);
  Tensor y = Tensor::empty(gate.shape(), gate.dtype(), gate.device());
  auto kernel = gelu ? be.geglu_tanh_forward : be.swiglu_forward;
  kernel(gate.dtype(), gc.raw_data(), uc.raw_data(), y.raw_data(), y.numel());
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
