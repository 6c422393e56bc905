"""Matrix products (matmul, linear) and dtype casts against torch.

Products: the reference is torch in float64 on the same inputs (bf16 inputs rounded first), so only
our accumulation and output rounding differ. Casts must match torch bit for bit."""
import itertools

import numpy as np
import pytest
import torch

from conftest import BF16, BWD_F32, FWD_F32, assert_close, run_op

SIZES = [1, 7, 33, 64, 130]


def _mat(batch, rows, cols, transposed, dtype=torch.float32):
    shape = tuple(batch) + ((cols, rows) if transposed else (rows, cols))
    return torch.randn(shape).to(dtype)


def _ref_matmul(a, b, ta, tb):
    a = a.transpose(-1, -2) if ta else a
    b = b.transpose(-1, -2) if tb else b
    return a @ b


def _check_matmul(a, b, ta=False, tb=False, fwd=FWD_F32, bwd=BWD_F32, op="matmul", ref_a=None):
    """Forward and both gradients against float64 torch on the same values."""
    a64 = a.double().requires_grad_(True)
    b64 = b.double().requires_grad_(True)
    ref = _ref_matmul(ref_a(a64) if ref_a else a64, b64, ta, tb)
    g = torch.randn(ref.shape).to(a.dtype)
    ref.backward(g.double())
    params = {"transpose_a": ta, "transpose_b": tb}
    r = run_op(op, {"a": a, "b": b}, params, grad_outputs=[g], requires_grad=["a", "b"])
    what = f"{op} a{tuple(a.shape)} b{tuple(b.shape)} ta={ta} tb={tb} {a.dtype}"
    assert_close(r.outputs[0], ref, fwd, what + " forward")
    assert_close(r.grads["a"], a64.grad, bwd, what + " grad a")
    assert_close(r.grads["b"], b64.grad, bwd, what + " grad b")


@pytest.mark.parametrize("M,N,K", list(itertools.product(SIZES, SIZES, SIZES)))
def test_matmul_fp32_shapes(M, N, K):
    # Cycle through the transpose combinations so every shape meets one of them.
    ta, tb = [(False, False), (False, True), (True, False), (True, True)][(M + 3 * N + 5 * K) % 4]
    _check_matmul(_mat((), M, K, ta), _mat((), K, N, tb), ta, tb)


@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("M,N,K", [(33, 130, 64), (130, 7, 33), (64, 64, 64)])
def test_matmul_fp32_transposes(M, N, K, ta, tb):
    _check_matmul(_mat((), M, K, ta), _mat((), K, N, tb), ta, tb)


@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize(
    "a_batch,b_batch",
    [
        ((2, 3), (2, 3)),  # equal batch dims
        ((2, 3), ()),  # b 2-D, shared by every batch
        ((), (4,)),  # a 2-D, shared
        ((2, 1), (1, 3)),  # general broadcast
        ((3, 1, 2), (5, 1)),  # broadcast with a missing leading dim
        ((1,), (2, 3)),
    ],
)
def test_matmul_fp32_batched(a_batch, b_batch, ta, tb):
    _check_matmul(_mat(a_batch, 7, 33, ta), _mat(b_batch, 33, 17, tb), ta, tb)


def test_matmul_transposed_view():
    a = torch.randn(2, 33, 7)  # stored [.., K, M]; the op transposes it as a view
    b = torch.randn(2, 33, 5)
    _check_matmul(a, b, op="matmul_view_t", ref_a=lambda t: t.transpose(-1, -2))


@pytest.mark.parametrize("ta,tb", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize(
    "a_batch,b_batch,M,N,K",
    [((), (), 33, 130, 64), ((), (), 1, 7, 130), ((2, 3), (2, 3), 7, 33, 64), ((2, 3), (), 33, 17, 130),
     ((2, 1), (1, 3), 7, 5, 33), ((4,), (), 64, 64, 64)],
)
def test_matmul_bf16(a_batch, b_batch, M, N, K, ta, tb):
    a = _mat(a_batch, M, K, ta, torch.bfloat16)
    b = _mat(b_batch, K, N, tb, torch.bfloat16)
    _check_matmul(a, b, ta, tb, fwd=BF16, bwd=BF16)


def _check_linear(x, w, bias, fwd, bwd):
    x64 = x.double().requires_grad_(True)
    w64 = w.double().requires_grad_(True)
    b64 = bias.double().requires_grad_(True) if bias is not None else None
    ref = torch.nn.functional.linear(x64, w64, b64)
    g = torch.randn(ref.shape).to(x.dtype)
    ref.backward(g.double())
    inputs = {"x": x, "weight": w}
    if bias is not None:
        inputs["bias"] = bias
    r = run_op("linear", inputs, grad_outputs=[g], requires_grad=list(inputs))
    what = f"linear x{tuple(x.shape)} w{tuple(w.shape)} bias={bias is not None} {x.dtype}"
    assert_close(r.outputs[0], ref, fwd, what + " forward")
    assert_close(r.grads["x"], x64.grad, bwd, what + " grad x")
    assert_close(r.grads["weight"], w64.grad, bwd, what + " grad weight")
    if bias is not None:
        assert_close(r.grads["bias"], b64.grad, bwd, what + " grad bias")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("x_shape,out", [((7,), 5), ((33, 64), 130), ((2, 3, 130), 33), ((2, 65, 96), 1)])
def test_linear(x_shape, out, with_bias, dtype):
    x = torch.randn(x_shape).to(dtype)
    w = (torch.randn(out, x_shape[-1]) / x_shape[-1] ** 0.5).to(dtype)
    bias = torch.randn(out).to(dtype) if with_bias else None
    tol = (FWD_F32, BWD_F32) if dtype == torch.float32 else (BF16, BF16)
    _check_linear(x, w, bias, *tol)


# ------------------------------------------------------------------------------------------------
# Casts: bit-exact against torch.


def _special_f32():
    """Values that stress rounding: bf16 / f16 ties both ways, near-ties, subnormals, overflow, inf, NaN."""
    bits = []
    for hi in [0x3F80, 0x3F81, 0x4049, 0x7F7F, 0x0001, 0x0080, 0x8000, 0xBF80, 0xC2F7]:
        for lo in [0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF]:
            bits.append((hi << 16) | lo)
    arr = np.array(bits, dtype=np.uint32).view(np.float32)
    extra = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 3.4028235e38, -3.4028235e38, 1e-45, 65504.0,
                      65520.0, 65519.99, 6.1035156e-05, 5.9604645e-08, 2.9802322e-08, 2.9802326e-08, 1.00048828125,
                      1.00146484375, 0.333333333, -7.5e-8, 1e-40],
                     dtype=np.float32)
    return torch.from_numpy(np.concatenate([arr, extra]))


def _cast_inputs():
    return torch.cat([_special_f32(), torch.randn(1000) * 100, torch.randn(37) * 1e-6])


def _bits(t):
    return t.view(torch.int16).numpy().astype(np.int32) & 0xFFFF


@pytest.mark.parametrize("to", ["bf16", "f16"])
def test_cast_f32_to_16bit_bit_exact(to):
    x = _cast_inputs()
    ref = x.to(torch.bfloat16 if to == "bf16" else torch.float16)
    r = run_op("to_dtype_bits", {"x": x}, {"to": to})
    ours, want = r.outputs[0].astype(np.int64), _bits(ref).astype(np.int64)
    nan = torch.isnan(x).numpy()
    # NaN: any quiet NaN of the same sign class is fine (payloads differ between torch's paths).
    exp_mask = 0x7F80 if to == "bf16" else 0x7C00
    assert np.all((ours[nan] & exp_mask) == exp_mask) and np.all((ours[nan] & ~(exp_mask | 0x8000)) != 0)
    mismatch = np.nonzero(ours[~nan] != want[~nan])[0]
    assert mismatch.size == 0, f"{mismatch.size} mismatches, first: x={x[~torch.from_numpy(nan)][mismatch[:5]]}"


@pytest.mark.parametrize("frm,to", [(f, t) for f in ["bf16", "f16"] for t in ["f32", "f64", "bf16", "f16"] if f != t])
def test_cast_all_16bit_patterns(frm, to):
    bits = np.arange(65536, dtype=np.int32)
    src = torch.from_numpy(bits.astype(np.uint16).view(np.int16)).view(torch.bfloat16 if frm == "bf16" else torch.float16)
    tdt = {"f32": torch.float32, "f64": torch.float64, "bf16": torch.bfloat16, "f16": torch.float16}[to]
    ref = src.to(tdt)
    r = run_op("to_dtype_from_bits", {"bits": bits}, {"from": frm, "to": to})
    ours = r.outputs[0]  # 16-bit results come back as f32, exactly
    want = ref.float().numpy() if to in ("bf16", "f16") else ref.numpy()
    np.testing.assert_array_equal(ours, want)  # NaN == NaN here


@pytest.mark.parametrize("to", ["bf16", "f16", "f64"])
def test_cast_from_f32_values_and_gradient(to):
    x = _cast_inputs()
    x = x[torch.isfinite(x)]
    tdt = {"f64": torch.float64, "bf16": torch.bfloat16, "f16": torch.float16}[to]
    ref = x.to(tdt)
    if to == "f16":  # gradients only through dtypes run_op can send
        r = run_op("to_dtype", {"x": x}, {"to": to})
        np.testing.assert_array_equal(r.outputs[0], ref.float().numpy())
        return
    g = torch.randn(x.shape).to(tdt)
    r = run_op("to_dtype", {"x": x}, {"to": to}, grad_outputs=[g], requires_grad=["x"])
    np.testing.assert_array_equal(r.outputs[0], ref.float().numpy() if to == "bf16" else ref.numpy())
    assert r.grads["x"].dtype == np.float32
    np.testing.assert_array_equal(r.grads["x"], g.float().numpy())


def test_cast_bf16_to_f32_gradient_rounds_back():
    x = torch.randn(257).to(torch.bfloat16)
    g = torch.randn(257)  # f32 gradient, rounded to bf16 on the way back
    r = run_op("to_dtype", {"x": x}, {"to": "f32"}, grad_outputs=[g], requires_grad=["x"])
    np.testing.assert_array_equal(r.outputs[0], x.float().numpy())
    np.testing.assert_array_equal(r.grads["x"], g.to(torch.bfloat16).float().numpy())


def test_cast_f64_to_16bit_goes_through_f32_like_torch():
    x = torch.cat([_cast_inputs().double(), torch.randn(300, dtype=torch.float64),
                   torch.tensor([1.0 + 2.0**-8 + 2.0**-40, 1.0 + 2.0**-11 + 2.0**-40], dtype=torch.float64)])
    for to, tdt in [("bf16", torch.bfloat16), ("f16", torch.float16), ("f32", torch.float32)]:
        r = run_op("to_dtype", {"x": x}, {"to": to})
        np.testing.assert_array_equal(r.outputs[0], x.to(tdt).float().numpy(), err_msg=to)
