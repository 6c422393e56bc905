"""Scaled dot-product attention against torch. The reference is explicit float64 math as
transformers' eager attention does it: scores = scale * q k^T, Gemma-2 soft-capping
(softcap * tanh(scores / softcap)), masks built like transformers.masking_utils (causal
kv <= q, sliding window kv > q - window, packed sequences ids[q] == ids[kv]), softmax, @ v,
with K/V heads repeat_interleave'd for grouped-query attention."""
import math

import numpy as np
import pytest
import torch

from conftest import BF16, BWD_F32, FWD_F32, OpError, assert_close, run_op


def reference(q, k, v, scale=0.0, causal=True, window=0, softcap=0.0, seq_ids=None):
    """q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv] -> [B, Tq, Hq, Dv]; queries are the
    last Tq positions."""
    B, Tq, Hq, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    groups = Hq // Hkv
    scale = scale or 1.0 / math.sqrt(D)
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(groups, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(groups, dim=1)
    scores = (qh @ kh.transpose(-1, -2)) * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    q_pos = torch.arange(Tk - Tq, Tk)[:, None]
    kv_pos = torch.arange(Tk)[None, :]
    allowed = torch.ones(Tq, Tk, dtype=torch.bool)
    if causal:
        allowed &= kv_pos <= q_pos
    if window:
        allowed &= kv_pos > q_pos - window
    allowed = allowed[None, None].expand(B, 1, Tq, Tk)
    if seq_ids is not None:
        ids = torch.as_tensor(seq_ids).long()
        allowed = allowed & (ids[:, None, Tk - Tq:, None] == ids[:, None, None, :])
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return (probs @ vh).transpose(1, 2)


def _inputs(B, Tq, Tk, Hq, Hkv, D, Dv, dtype, q_mult=1.0):
    q = (torch.randn(B, Tq, Hq, D) * q_mult).to(dtype)
    k = torch.randn(B, Tk, Hkv, D).to(dtype)
    v = torch.randn(B, Tk, Hkv, Dv).to(dtype)
    return q, k, v


def _check(q, k, v, params, seq_ids=None, fwd_tol=FWD_F32, bwd_tol=BWD_F32):
    leaves = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    ref = reference(*leaves, seq_ids=seq_ids, **params)
    g = torch.randn(ref.shape).to(q.dtype)
    ref.backward(g.double())
    inputs = {"q": q, "k": k, "v": v}
    if seq_ids is not None:
        inputs["seq_ids"] = seq_ids
    r = run_op("attention", inputs, params, grad_outputs=[g], requires_grad=["q", "k", "v"])
    what = f"{tuple(q.shape)} {tuple(k.shape)} {params}"
    assert_close(r.outputs[0], ref, fwd_tol, f"forward {what}")
    for name, leaf in zip("qkv", leaves):
        if leaf.grad.abs().max() == 0:
            # One visible key per row (T = 1): the softmax is constant, so dq is exactly zero and
            # a relative error is undefined; ours is rounding noise.
            assert np.abs(r.grads[name]).max() <= bwd_tol, f"grad {name} {what}: expected zeros"
            continue
        assert_close(r.grads[name], leaf.grad, bwd_tol, f"grad {name} {what}")


def _cases():
    """T x D x (Hq=8, Hkv) covered fully; batch, window and softcap rotate through them."""
    cases = []
    idx = 0
    for T in (1, 7, 64, 130):
        for D in (8, 64, 80):
            for Hkv in (8, 4, 2, 1):
                B = 1 + idx % 2
                window = 16 if idx % 3 == 1 else 0
                softcap = 50.0 if idx % 4 >= 2 else 0.0
                cases.append((B, T, D, Hkv, window, softcap))
                idx += 1
    return cases


@pytest.mark.parametrize("B,T,D,Hkv,window,softcap", _cases())
def test_attention_f32(B, T, D, Hkv, window, softcap):
    # Larger q with the soft cap so tanh is well away from linear.
    q, k, v = _inputs(B, T, T, 8, Hkv, D, D, torch.float32, q_mult=4.0 if softcap else 1.0)
    _check(q, k, v, {"window": window, "softcap": softcap})


# T >= 16 runs the AVX512-BF16 kernel (bf16 tile products), shorter the fp32-tile one.
@pytest.mark.parametrize("B,T,D,Hkv,window,softcap",
                         [(1, 130, 64, 2, 0, 0.0), (2, 64, 80, 8, 16, 0.0), (1, 130, 8, 1, 16, 50.0),
                          (2, 7, 64, 4, 0, 50.0), (1, 200, 128, 2, 0, 0.0), (1, 97, 33, 4, 0, 0.0),
                          (2, 150, 64, 1, 40, 30.0), (1, 16, 64, 8, 0, 0.0)])
def test_attention_bf16(B, T, D, Hkv, window, softcap):
    q, k, v = _inputs(B, T, T, 8, Hkv, D, D, torch.bfloat16, q_mult=4.0 if softcap else 1.0)
    _check(q, k, v, {"window": window, "softcap": softcap}, fwd_tol=BF16, bwd_tol=BF16)


@pytest.mark.parametrize("Tq,causal", [(130, True), (64, False), (20, True)])
def test_attention_bf16_packed_and_decode(Tq, causal):
    # Packed documents, queries the last Tq of 130 positions, value head dim != key head dim.
    q, k, v = _inputs(2, Tq, 130, 8, 2, 64, 48, torch.bfloat16)
    _check(q, k, v, {"causal": causal}, seq_ids=_packed_ids(2, 130, np.int64), fwd_tol=BF16, bwd_tol=BF16)


def _packed_ids(B, T, dtype):
    ids = np.zeros((B, T), dtype=dtype)
    for b in range(B):
        bounds = [0, T // 3 + b * 5, 2 * T // 3 + 1, T]  # three documents, different splits per row
        for doc in range(3):
            ids[b, bounds[doc]:bounds[doc + 1]] = doc
    return ids


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("T,Hkv,window,causal", [(130, 2, 0, True), (130, 8, 16, True), (64, 4, 0, False),
                                                 (7, 1, 0, True)])
def test_attention_packed_seq_ids(dtype, T, Hkv, window, causal):
    B = 2
    q, k, v = _inputs(B, T, T, 8, Hkv, 64, 64, torch.float32)
    ids = _packed_ids(B, T, dtype) if T > 7 else np.array([[0, 0, 0, 1, 1, 2, 2, 2][:T]] * B, dtype=dtype)
    _check(q, k, v, {"window": window, "causal": causal}, seq_ids=ids)


@pytest.mark.parametrize("Tq", [1, 5])
@pytest.mark.parametrize("window,softcap,Hkv", [(0, 0.0, 2), (16, 0.0, 8), (0, 50.0, 1)])
def test_attention_decode(Tq, window, softcap, Hkv):
    # Tq new tokens against a longer KV cache (bottom-right aligned causal mask).
    q, k, v = _inputs(2, Tq, 130, 8, Hkv, 64, 64, torch.float32)
    _check(q, k, v, {"window": window, "softcap": softcap})


def test_attention_decode_packed_and_dv():
    # Decoding with packed ids, a value head dim different from the key head dim and a custom scale.
    q, k, v = _inputs(1, 5, 70, 4, 2, 24, 40, torch.float32)
    ids = _packed_ids(1, 70, np.int64)
    _check(q, k, v, {"scale": 0.3}, seq_ids=ids)


@pytest.mark.parametrize("Hkv", [8, 2])
def test_attention_matches_torch_sdpa(Hkv):
    q, k, v = _inputs(2, 130, 130, 8, Hkv, 64, 64, torch.float32)
    qt, kt, vt = (t.clone().transpose(1, 2).requires_grad_(True) for t in (q, k, v))
    kr = kt.repeat_interleave(8 // Hkv, dim=1)
    vr = vt.repeat_interleave(8 // Hkv, dim=1)
    ref = torch.nn.functional.scaled_dot_product_attention(qt, kr, vr, is_causal=True).transpose(1, 2)
    g = torch.randn(ref.shape)
    ref.backward(g)
    r = run_op("attention", {"q": q, "k": k, "v": v}, {}, grad_outputs=[g], requires_grad=["q", "k", "v"])
    assert_close(r.outputs[0], ref, FWD_F32, "forward vs sdpa")
    for name, t in zip("qkv", (qt, kt, vt)):
        assert_close(r.grads[name], t.grad.transpose(1, 2), BWD_F32, f"grad {name} vs sdpa")


def test_attention_errors():
    q, k, v = _inputs(1, 4, 4, 6, 4, 8, 8, torch.float32)
    with pytest.raises(OpError, match="multiple"):
        run_op("attention", {"q": q, "k": k, "v": v})
    q, k, v = _inputs(1, 4, 4, 4, 2, 8, 8, torch.float32)
    with pytest.raises(OpError, match="head dim"):
        run_op("attention", {"q": q, "k": k[..., :6], "v": v})
    with pytest.raises(OpError, match="seq_ids"):
        run_op("attention", {"q": q, "k": k, "v": v, "seq_ids": np.zeros((1, 3), np.int64)})
