"""Shared helper for the elementwise oracle tests: run one of our ops and torch (float64, from the
same fp32 / bf16 inputs) and compare outputs and input gradients with conftest's tolerances."""
import torch

from conftest import BF16, BWD_F32, FWD_F32, assert_close, run_op


def check(op, inputs, ref_fn, params=None, grad=None, skip_grads=()):
    """inputs: name -> torch tensor (fp32 or bf16). ref_fn(**float64 tensors) -> tensor or list.
    grad: names whose gradients are compared (default: all floating inputs). skip_grads: output
    indices that get no gradient (None in grad_outputs)."""
    if grad is None:
        grad = [n for n, t in inputs.items() if t.is_floating_point()]
    ref_in = {}
    for n, t in inputs.items():
        r = t.double() if t.is_floating_point() else t
        if n in grad:
            r = r.clone().requires_grad_(True)
        ref_in[n] = r
    ref_out = ref_fn(**ref_in)
    outs = list(ref_out) if isinstance(ref_out, (list, tuple)) else [ref_out]
    dtype = next(t.dtype for t in inputs.values() if t.is_floating_point())
    gouts = [None if i in skip_grads else torch.randn(o.shape, dtype=torch.float32).to(dtype)
             for i, o in enumerate(outs)]
    pairs = [(o, g) for o, g in zip(outs, gouts) if g is not None]
    if grad and pairs:
        torch.autograd.backward([o for o, _ in pairs], [g.double() for _, g in pairs])
    r = run_op(op, inputs, params, grad_outputs=gouts if grad else None, requires_grad=grad)
    fwd_tol, bwd_tol = (BF16, BF16) if dtype == torch.bfloat16 else (FWD_F32, BWD_F32)
    assert len(r.outputs) == len(outs)
    for i, o in enumerate(outs):
        assert_close(r.outputs[i], o, fwd_tol, f"{op} output {i}")
    for n in grad:
        assert n in r.grads, f"{op}: no gradient for {n}"
        assert_close(r.grads[n], ref_in[n].grad, bwd_tol, f"{op} grad {n}")
    return r
