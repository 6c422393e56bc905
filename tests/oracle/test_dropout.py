"""Dropout against its definition: the kept elements are x / (1 - p), the mask is the documented
Philox stream (re-implemented here in numpy), it depends only on (seed, offset), and the
gradient applies the same mask."""
import numpy as np
import pytest
import torch

from conftest import BF16, BWD_F32, FWD_F32, OpError, assert_close, run_op

M32 = np.uint64(0xFFFFFFFF)


def philox4x32(key, counters):
    """Philox4x32-10 on 64-bit counters (high 64 bits zero): four uint32 arrays."""
    c0 = counters & M32
    c1 = counters >> np.uint64(32)
    c2 = np.zeros_like(counters)
    c3 = np.zeros_like(counters)
    k0, k1 = np.uint64(key & 0xFFFFFFFF), np.uint64(key >> 32)
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        n0 = (p1 >> np.uint64(32)) ^ c1 ^ k0
        n2 = (p0 >> np.uint64(32)) ^ c3 ^ k1
        c1, c3, c0, c2 = p1 & M32, p0 & M32, n0, n2
        k0 = (k0 + np.uint64(0x9E3779B9)) & M32
        k1 = (k1 + np.uint64(0xBB67AE85)) & M32
    return c0, c1, c2, c3


def keep_mask(n, p, seed, offset):
    blocks = (n + 3) // 4
    r = np.stack(philox4x32(seed, np.arange(blocks, dtype=np.uint64) + np.uint64(offset)), axis=1).reshape(-1)[:n]
    u = (r >> np.uint64(8)).astype(np.float64) / 16777216.0
    return u >= p


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 33), (2, 1000), (4097,), (64, 1025)])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_mask_scaling_and_gradient(shape, p, dtype):
    x = torch.randn(shape).to(dtype)
    g = torch.randn(shape).to(dtype)
    params = {"p": p, "seed": 1234, "offset": 17}
    r = run_op("dropout", {"x": x}, params, grad_outputs=[g], requires_grad=["x"])
    y = torch.from_numpy(r.outputs[0]).double()
    keep = torch.from_numpy(keep_mask(x.numel(), p, 1234, 17)).reshape(shape)
    # The mask our zeros imply is the Philox stream's (x itself has no exact zeros).
    assert torch.equal(y != 0, keep)
    tol = BF16 if dtype == torch.bfloat16 else FWD_F32
    assert_close(y.numpy(), x.double() * keep / (1 - p), tol, "dropout output")
    gtol = BF16 if dtype == torch.bfloat16 else BWD_F32
    assert_close(r.grads["x"], g.double() * keep / (1 - p), gtol, "dropout grad")


def test_statistics_and_reproducibility():
    x = torch.ones(200000)
    a = run_op("dropout", {"x": x}, {"p": 0.3, "seed": 5, "offset": 0}).outputs[0]
    b = run_op("dropout", {"x": x}, {"p": 0.3, "seed": 5, "offset": 0}).outputs[0]
    c = run_op("dropout", {"x": x}, {"p": 0.3, "seed": 5, "offset": 50000}).outputs[0]
    d = run_op("dropout", {"x": x}, {"p": 0.3, "seed": 6, "offset": 0}).outputs[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    assert abs((a == 0).mean() - 0.3) < 5e-3
    assert abs(a.mean() - 1.0) < 1e-2


def test_identity_zero_and_errors():
    x = torch.randn(5, 7)
    for params in [{"p": 0.0}, {"p": 0.5, "training": False}]:
        r = run_op("dropout", {"x": x}, params)
        np.testing.assert_array_equal(r.outputs[0], x.numpy())
    r = run_op("dropout", {"x": x}, {"p": 1.0}, grad_outputs=[torch.randn(5, 7)], requires_grad=["x"])
    assert not r.outputs[0].any() and not r.grads["x"].any()
    for p in [-0.1, 1.1]:
        with pytest.raises(OpError, match="p"):
            run_op("dropout", {"x": x}, {"p": p})
