"""Views and layout changes against torch: values and gradients must match exactly (they move data)."""
import numpy as np
import pytest
import torch

from conftest import run_op


def _check(op, x, params, ref_fn):
    xt = x.clone().requires_grad_(True)
    ref = ref_fn(xt)
    g = torch.randn_like(ref)
    ref.backward(g)
    r = run_op(op, {"x": x}, params, grad_outputs=[g], requires_grad=["x"])
    np.testing.assert_array_equal(r.outputs[0], ref.detach().numpy())
    np.testing.assert_array_equal(r.grads["x"], xt.grad.numpy())


@pytest.mark.parametrize("shape,new", [((2, 3, 4), [6, -1]), ((5, 7), [35]), ((1, 4, 1), [2, 2])])
def test_reshape(shape, new):
    _check("reshape", torch.randn(shape), {"shape": new}, lambda t: t.reshape(new))


@pytest.mark.parametrize("dims", [[1, 0, 2], [2, 1, 0], [0, 2, 1]])
def test_permute(dims):
    _check("permute", torch.randn(3, 4, 5), {"dims": dims}, lambda t: t.permute(dims))


@pytest.mark.parametrize("dim,start,end,step", [(0, 1, 3, 1), (1, 0, 7, 2), (-1, -3, 5, 1), (1, 2, 100, 3)])
def test_slice(dim, start, end, step):
    x = torch.randn(4, 7, 5)
    p = {"dim": dim, "start": start, "end": end, "step": step}
    _check("slice", x, p, lambda t: t.narrow(0, 0, t.shape[0])[(slice(None),) * (dim % 3) + (slice(start, end, step),)])


def test_permute_slice_contiguous():
    x = torch.randn(3, 6, 5, 4)
    p = {"dims": [2, 0, 3, 1], "dim": 3, "start": 1, "end": 6, "step": 2}
    _check("permute_slice_contiguous", x, p, lambda t: t.permute(2, 0, 3, 1)[:, :, :, 1:6:2].contiguous())
