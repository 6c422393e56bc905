"""Binary arithmetic with broadcasting, scale, sum / mean / sum_to_shape and the activations
against torch: fp32 (forward <= 1e-5, backward <= 1e-4) and bf16 (<= 1e-2)."""
import pytest
import torch
import torch.nn.functional as F

from conftest import OpError, run_op
from elementwise_ref import check

DTYPES = [torch.float32, torch.bfloat16]
LAST = [1, 7, 33, 1000, 4097]

BROADCASTS = [((5, 33), (5, 33)), ((3, 1, 5), (4, 1)), ((4, 1000), (1000,)), ((6, 7), (6, 1)), ((2, 3), ()),
              ((), (3, 4)), ((1,), (4097,)), ((4, 1), (1, 33)), ((2, 1, 3, 1), (5, 1, 4))]


def rnd(shape, dtype):
    return torch.randn(shape).to(dtype)


def divisor(shape, dtype):
    t = torch.randn(shape)
    return (t.sign() * (t.abs() + 0.5)).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sa,sb", BROADCASTS)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary(op, sa, sb, dtype):
    fn = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}[op]
    b = divisor(sb, dtype) if op == "div" else rnd(sb, dtype)
    check(op, {"a": rnd(sa, dtype), "b": b}, lambda a, b: fn(a, b))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", LAST)
def test_binary_row_and_scalar_broadcast(n, dtype):
    check("add", {"a": rnd((3, n), dtype), "b": rnd((n,), dtype)}, lambda a, b: a + b)
    check("mul", {"a": rnd((3, n), dtype), "b": rnd((), dtype)}, lambda a, b: a * b)
    check("div", {"a": rnd((), dtype), "b": divisor((2, n), dtype)}, lambda a, b: a / b)


def test_binary_strided_operand():
    check("mul_transposed", {"a": torch.randn(9, 4), "b": torch.randn(9)}, lambda a, b: a.t() * b)


def test_binary_errors():
    with pytest.raises(OpError, match=r"\[2, 3\].*\[4\]"):
        run_op("add", {"a": torch.randn(2, 3), "b": torch.randn(4)})
    with pytest.raises(OpError, match="dtype"):
        run_op("mul", {"a": torch.randn(3), "b": torch.randn(3).double()})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", LAST)
def test_scale(n, dtype):
    check("scale", {"x": rnd((2, n), dtype)}, lambda x: x * -1.75, {"factor": -1.75})


REDUCTIONS = [((3, 4, 5), []), ((3, 4, 5), [0]), ((3, 4, 5), [1]), ((3, 4, 5), [-1]), ((3, 4, 5), [0, 2]),
              ((2, 3, 4, 5), [1, 3]), ((64, 4097), [0]), ((3, 4097), [1]), ((1000,), [0]), ((7, 1), [1]),
              ((200, 33), [0])]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dims", REDUCTIONS)
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("op", ["sum", "mean"])
def test_reduce(op, shape, dims, keepdim, dtype):
    def ref(x):
        d = dims if dims else list(range(x.dim()))
        return x.sum(d, keepdim=keepdim) if op == "sum" else x.mean(d, keepdim=keepdim)
    check(op, {"x": rnd(shape, dtype)}, ref, {"dims": dims, "keepdim": keepdim})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,to", [((3, 4, 5), (4, 1)), ((3, 4, 5), (3, 1, 5)), ((6, 1000), (1000,)),
                                      ((3, 4, 5), ()), ((2, 3, 4), (1, 3, 1))])
def test_sum_to_shape(shape, to, dtype):
    def ref(x):
        lead = x.dim() - len(to)
        dims = list(range(lead)) + [lead + i for i, s in enumerate(to) if s == 1 and x.shape[lead + i] != 1]
        return x.sum(dims, keepdim=True).reshape(to)
    check("sum_to_shape", {"x": rnd(shape, dtype)}, ref, {"shape": list(to)})


def test_long_fp32_sum():
    x = torch.rand(1 << 22)
    r = run_op("sum", {"x": x}, {"dims": []})
    ref = x.double().sum()
    assert abs(float(r.outputs[0]) - float(ref)) <= 1e-6 * float(ref)


ACTS = {
    "silu": (lambda x: F.silu(x), {}),
    "gelu": (lambda x: F.gelu(x), {}),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), {"tanh": True}),
    "softcap": (lambda x: 30.0 * torch.tanh(x / 30.0), {"cap": 30.0}),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", LAST)
@pytest.mark.parametrize("act", list(ACTS))
def test_activation(act, n, dtype):
    fn, params = ACTS[act]
    op = "gelu" if act.startswith("gelu") else act
    scale = 40.0 if act == "softcap" else 3.0
    x = (torch.randn(3, n) * scale).to(dtype)
    check(op, {"x": x}, fn, params)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", LAST)
@pytest.mark.parametrize("op", ["swiglu", "geglu_tanh"])
def test_gated(op, n, dtype):
    act = F.silu if op == "swiglu" else (lambda t: F.gelu(t, approximate="tanh"))
    gate, up = (torch.randn(2, n) * 3).to(dtype), rnd((2, n), dtype)
    check(op, {"gate": gate, "up": up}, lambda gate, up: act(gate) * up)
    check(op, {"gate": gate, "up": up}, lambda gate, up: act(gate) * up, grad=["up"])


def test_activation_errors():
    with pytest.raises(OpError, match="shape"):
        run_op("swiglu", {"gate": torch.randn(2, 3), "up": torch.randn(3, 2)})
    with pytest.raises(OpError, match="cap"):
        run_op("softcap", {"x": torch.randn(3)}, {"cap": 0.0})
