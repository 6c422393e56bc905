"""components/loss against torch: MaskedCrossEntropy, ChunkedCrossEntropy and FusedLinearCrossEntropy.
Reference: float64 torch.nn.functional.cross_entropy on explicit logits (hidden @ weight.T for the fused
loss) from the same fp32 or bf16-rounded inputs, reduction sum, divided by num_label_tokens when given
or by the number of label tokens (NeMo Automodel's masked_ce / chunked_ce / linear_ce semantics)."""
import pytest
import torch

from conftest import BF16, BWD_F32, FWD_F32, assert_close, run_op


def _labels(shape, vocab, ignore_every=3):
    labels = torch.randint(0, vocab, shape, dtype=torch.int64)
    flat = labels.view(-1)
    flat[1::ignore_every] = -100
    return labels


def _ref_loss(logits64, labels, num):
    total = torch.nn.functional.cross_entropy(
        logits64.reshape(-1, logits64.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum")
    denom = num if num is not None else int((labels != -100).sum())
    return total / denom if denom > 0 else total * 0.0


def _params(num, **kw):
    p = dict(kw)
    if num is not None:
        p["num_label_tokens"] = num
    return p


SHAPES = [((2, 9), 37), ((3, 17), 130), ((1, 33), 1000), ((50,), 17)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lead,vocab", SHAPES)
@pytest.mark.parametrize("num", [None, 64])
@pytest.mark.parametrize("op,extra", [("masked_ce", {}), ("chunked_ce", {"chunk_len": 5}),
                                      ("chunked_ce", {"chunk_len": 32})])
def test_logits_losses(op, extra, lead, vocab, num, dtype):
    logits = (torch.randn(*lead, vocab) * 3).to(dtype)
    labels = _labels(lead, vocab)
    x64 = logits.double().requires_grad_(True)
    ref = _ref_loss(x64, labels, num)
    g = torch.tensor(1.7)
    ref.backward(g.double())
    r = run_op(op, {"logits": logits, "labels": labels}, _params(num, **extra), grad_outputs=[g],
               requires_grad=["logits"])
    fwd, bwd = (FWD_F32, BWD_F32) if dtype == torch.float32 else (BF16, BF16)
    what = f"{op} {extra} {tuple(logits.shape)} num={num} {dtype}"
    assert r.outputs[0].dtype.name == "float32"
    assert_close(r.outputs[0], ref, fwd, what + " forward")
    assert_close(r.grads["logits"], x64.grad, bwd, what + " grad logits")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# Rows not a multiple of the chunk, one row, vocabularies off the 16-lane vectors and across the 2048-element
# summation blocks, and (40 rows, hidden 1024, chunk 12) bf16 chunks whose weight gradient is added through
# several fp32 tiles of 2048 vocabulary rows.
@pytest.mark.parametrize("lead,H,vocab,chunk", [((2, 9), 16, 37, 4), ((3, 17), 24, 130, 0), ((1, 33), 33, 1000, 7),
                                                ((64,), 8, 17, 64), ((130,), 17, 257, 16), ((1,), 16, 2053, 0),
                                                ((40,), 1024, 4100, 12)])
@pytest.mark.parametrize("num", [None, 100])
def test_fused_linear_ce(lead, H, vocab, chunk, num, dtype):
    hidden = torch.randn(*lead, H).to(dtype)
    weight = (torch.randn(vocab, H) / H**0.5).to(dtype)
    labels = _labels(lead, vocab)
    h64 = hidden.double().requires_grad_(True)
    w64 = weight.double().requires_grad_(True)
    ref = _ref_loss(h64 @ w64.T, labels, num)
    g = torch.tensor(0.6)
    ref.backward(g.double())
    r = run_op("fused_linear_ce", {"hidden": hidden, "weight": weight, "labels": labels},
               _params(num, chunk_len=chunk), grad_outputs=[g], requires_grad=["hidden", "weight"])
    fwd, bwd = (FWD_F32, BWD_F32) if dtype == torch.float32 else (BF16, BF16)
    what = f"fused_linear_ce {tuple(hidden.shape)} V={vocab} chunk={chunk} num={num} {dtype}"
    assert_close(r.outputs[0], ref, fwd, what + " forward")
    assert_close(r.grads["hidden"], h64.grad, bwd, what + " grad hidden")
    assert_close(r.grads["weight"], w64.grad, bwd, what + " grad weight")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cap", [2.0, 30.0])
def test_fused_linear_ce_softcap(cap, dtype):
    hidden = (torch.randn(3, 21, 12) * 2).to(dtype)
    weight = torch.randn(77, 12).to(dtype)
    labels = _labels((3, 21), 77)
    h64 = hidden.double().requires_grad_(True)
    w64 = weight.double().requires_grad_(True)
    ref = _ref_loss(cap * torch.tanh((h64 @ w64.T) / cap), labels, None)
    ref.backward()
    r = run_op("fused_linear_ce", {"hidden": hidden, "weight": weight, "labels": labels},
               {"chunk_len": 10, "logit_softcap": cap}, grad_outputs=[torch.tensor(1.0)],
               requires_grad=["hidden", "weight"])
    fwd, bwd = (FWD_F32, BWD_F32) if dtype == torch.float32 else (BF16, BF16)
    what = f"fused_linear_ce softcap={cap} {dtype}"
    assert_close(r.outputs[0], ref, fwd, what + " forward")
    assert_close(r.grads["hidden"], h64.grad, bwd, what + " grad hidden")
    assert_close(r.grads["weight"], w64.grad, bwd, what + " grad weight")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_linear_ce_frozen_weight(dtype):
    """LoRA's case: the (tied) LM-head weight is frozen, only d(hidden) is asked for."""
    hidden, weight = torch.randn(20, 8).to(dtype), torch.randn(31, 8).to(dtype)
    labels = _labels((20,), 31)
    h64 = hidden.double().requires_grad_(True)
    ref = _ref_loss(h64 @ weight.double().T, labels, None)
    ref.backward()
    r = run_op("fused_linear_ce", {"hidden": hidden, "weight": weight, "labels": labels}, {"chunk_len": 6},
               grad_outputs=[torch.tensor(1.0)], requires_grad=["hidden"])
    fwd, bwd = (FWD_F32, BWD_F32) if dtype == torch.float32 else (BF16, BF16)
    assert_close(r.outputs[0], ref, fwd, f"frozen forward {dtype}")
    assert_close(r.grads["hidden"], h64.grad, bwd, f"frozen grad hidden {dtype}")
    assert "weight" not in r.grads


def test_fused_linear_ce_all_ignored_is_zero():
    hidden, weight = torch.randn(6, 5), torch.randn(11, 5)
    labels = torch.full((6,), -100, dtype=torch.int64)
    r = run_op("fused_linear_ce", {"hidden": hidden, "weight": weight, "labels": labels}, {"chunk_len": 4},
               grad_outputs=[torch.tensor(1.0)], requires_grad=["hidden", "weight"])
    assert float(r.outputs[0]) == 0.0
    assert (r.grads["hidden"] == 0).all() and (r.grads["weight"] == 0).all()


@pytest.mark.parametrize("op", ["masked_ce", "chunked_ce"])
def test_all_ignored_is_zero(op):
    logits = torch.randn(6, 11)
    labels = torch.full((6,), -100, dtype=torch.int64)
    r = run_op(op, {"logits": logits, "labels": labels}, {}, grad_outputs=[torch.tensor(1.0)],
               requires_grad=["logits"])
    assert float(r.outputs[0]) == 0.0
    assert (r.grads["logits"] == 0).all()
