"""softmax / log_softmax along any dim against torch: fp32 (forward <= 1e-5, backward <= 1e-4) and
bf16 (<= 1e-2), rows up to 49152 long, large and -inf inputs."""
import pytest
import torch

from conftest import BWD_F32, FWD_F32, assert_close, run_op
from elementwise_ref import check

DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 33, 1000, 4097, 49152])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_last_dim(op, n, dtype):
    x = (torch.randn(3, n) * 4).to(dtype)
    check(op, {"x": x}, lambda x: getattr(torch, op)(x, -1), {"dim": -1})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim", [((3, 4, 5), 0), ((3, 4, 5), 1), ((7, 33), 0), ((2, 1000, 3), 1),
                                       ((4097, 2), 0), ((2, 3, 1, 300), 2), ((5,), 0)])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_any_dim(op, shape, dim, dtype):
    x = torch.randn(shape).to(dtype)
    check(op, {"x": x}, lambda x: getattr(torch, op)(x, dim), {"dim": dim})


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_large_and_masked(op):
    x = torch.randn(4, 257) * 30 + 1000
    x[:, ::3] = float("-inf")
    xt = x.double().requires_grad_(True)
    ref = getattr(torch, op)(xt, -1)
    g = torch.randn(4, 257)
    ref.backward(g.double())
    r = run_op(op, {"x": x}, {"dim": -1}, grad_outputs=[g], requires_grad=["x"])
    ours = torch.from_numpy(r.outputs[0]).double()
    finite = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(ours), finite)
    assert torch.equal(ours[~finite], ref.detach()[~finite])  # exactly 0 (softmax) or -inf (log_softmax)
    assert_close(ours[finite].numpy(), ref.detach()[finite], FWD_F32, op)
    assert_close(r.grads["x"], xt.grad, BWD_F32, op + " grad")
