"""Layer ops against torch, written the way transformers computes them: nn.functional.embedding
(padding_idx), LlamaRMSNorm / GemmaRMSNorm (1 + w), layer_norm, apply_rotary_pos_emb with
rotate_half (and the interleaved variant), nn.functional.cross_entropy(ignore_index=-100).
References run in float64 on the same (fp32 or bf16-rounded) inputs; forward and backward."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import BF16, BWD_F32, FWD_F32, OpError, rel_err, run_op

DTYPES = [torch.float32, torch.bfloat16]
MAX_ERR = {}  # (op, dtype, fwd/bwd) -> largest relative error seen


def check(ours, ref, dtype, what):
    tol = BF16 if dtype == torch.bfloat16 else (FWD_F32 if what.endswith("fwd") else BWD_F32)
    err = rel_err(ours, ref)
    key = (what.split(":")[0], str(dtype).replace("torch.", ""), what.rsplit(" ", 1)[-1])
    MAX_ERR[key] = max(MAX_ERR.get(key, 0.0), err)
    assert err <= tol, f"{what} {dtype}: relative error {err:.3e} > {tol:.1e}"


def teardown_module():
    print("\nmax relative errors (op, dtype, pass):")
    for key in sorted(MAX_ERR):
        print(f"  {key}: {MAX_ERR[key]:.3e}")


def leaf64(t):
    return t.detach().double().requires_grad_(True)


# ---------------------------------------------------------------- embedding


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "vocab,hidden,shape,padding_idx,id_range",
    [
        (1000, 1, (2, 13), -1, 1000),
        (1000, 7, (1, 64), 3, 10),  # many repeats, padding row among them
        (1000, 576, (3, 13), -1, 40),
        (1000, 1000, (1,), 0, 1000),
        (49152, 33, (2, 64), 49151, 49152),
        (49152, 33, (64,), -1, 7),
    ],
)
def test_embedding(dtype, vocab, hidden, shape, padding_idx, id_range):
    w = torch.randn(vocab, hidden).to(dtype)
    ids = torch.randint(0, id_range, shape)
    if padding_idx >= 0:
        ids.view(-1)[:: 3] = padding_idx
    w64 = leaf64(w)
    ref = F.embedding(ids, w64, padding_idx=padding_idx if padding_idx >= 0 else None)
    g = torch.randn(ref.shape).to(dtype)
    ref.backward(g.double())
    r = run_op("embedding", {"ids": ids, "weight": w}, {"padding_idx": padding_idx}, grad_outputs=[g],
               requires_grad=["weight"])
    np.testing.assert_array_equal(r.outputs[0], w.float()[ids].numpy())  # a gather: exact
    check(r.grads["weight"], w64.grad, dtype, "embedding: bwd")
    if padding_idx >= 0:
        assert not r.grads["weight"][padding_idx].any()


def test_embedding_i32_ids_and_errors():
    w = torch.randn(50, 8)
    ids = torch.randint(0, 50, (4, 5), dtype=torch.int32)
    r = run_op("embedding", {"ids": ids, "weight": w})
    np.testing.assert_array_equal(r.outputs[0], w[ids.long()].numpy())
    with pytest.raises(OpError, match="id 50 .*vocab size 50"):
        run_op("embedding", {"ids": torch.tensor([1, 50]), "weight": w})
    with pytest.raises(OpError, match="id -2"):
        run_op("embedding", {"ids": torch.tensor([-2]), "weight": w})


# ---------------------------------------------------------------- RMSNorm


def llama_rms_norm(x, w, eps):  # LlamaRMSNorm.forward, in float64
    variance = x.pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(variance + eps)
    return x if w is None else w * x


def gemma_rms_norm(x, w, eps):  # GemmaRMSNorm.forward, in float64
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x * (1.0 + w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ["llama", "gemma", "no_affine"])
@pytest.mark.parametrize("shape", [(5, 1), (3, 7), (2, 13, 33), (1, 64, 576), (13, 1000)])
def test_rms_norm(dtype, variant, shape):
    eps = 1e-6 if shape[-1] > 1 else 0.25
    x = torch.randn(shape).to(dtype)
    w = (torch.randn(shape[-1]) * 0.5 + (0 if variant == "gemma" else 1)).to(dtype)
    x64, w64 = leaf64(x), leaf64(w)
    ref = gemma_rms_norm(x64, w64, eps) if variant == "gemma" else llama_rms_norm(
        x64, None if variant == "no_affine" else w64, eps)
    g = torch.randn(ref.shape).to(dtype)
    ref.backward(g.double())
    inputs = {"x": x} if variant == "no_affine" else {"x": x, "weight": w}
    r = run_op("rms_norm", inputs, {"eps": eps, "unit_offset": variant == "gemma"}, grad_outputs=[g],
               requires_grad=list(inputs))
    check(r.outputs[0], ref, dtype, "rms_norm: fwd")
    check(r.grads["x"], x64.grad, dtype, "rms_norm: bwd")
    if variant != "no_affine":
        check(r.grads["weight"], w64.grad, dtype, "rms_norm: bwd")


def test_rms_norm_bf16_matches_transformers_rounding():
    """bf16 LlamaRMSNorm: fp32 statistics, hidden_states.to(bf16), then weight * (in bf16)."""
    x = torch.randn(4, 576).to(torch.bfloat16)
    w = torch.randn(576).to(torch.bfloat16)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)
    expect = (w * h.to(torch.bfloat16)).float()
    ours = run_op("rms_norm", {"x": x, "weight": w}, {"eps": 1e-5}).outputs[0]
    # Identical up to the last bit of the fp32 row sum: at most one bf16 step apart.
    assert rel_err(ours, expect) <= 2 ** -7


# ---------------------------------------------------------------- LayerNorm


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
@pytest.mark.parametrize("shape", [(3, 7), (2, 13, 33), (1, 64, 576), (13, 1000)])
def test_layer_norm(dtype, affine, shape):
    H = shape[-1]
    x = (torch.randn(shape) * 2 + 0.5).to(dtype)
    w = torch.randn(H).to(dtype) if affine in ("both", "weight") else None
    b = torch.randn(H).to(dtype) if affine in ("both", "bias") else None
    x64 = leaf64(x)
    w64 = leaf64(w) if w is not None else None
    b64 = leaf64(b) if b is not None else None
    ref = F.layer_norm(x64, (H,), w64, b64, 1e-5)
    g = torch.randn(ref.shape).to(dtype)
    ref.backward(g.double())
    inputs = {"x": x}
    if w is not None:
        inputs["weight"] = w
    if b is not None:
        inputs["bias"] = b
    r = run_op("layer_norm", inputs, {"eps": 1e-5}, grad_outputs=[g], requires_grad=list(inputs))
    check(r.outputs[0], ref, dtype, "layer_norm: fwd")
    check(r.grads["x"], x64.grad, dtype, "layer_norm: bwd")
    if w is not None:
        check(r.grads["weight"], w64.grad, dtype, "layer_norm: bwd")
    if b is not None:
        check(r.grads["bias"], b64.grad, dtype, "layer_norm: bwd")


def test_layer_norm_hidden_1():
    x, w, b = torch.randn(5, 1), torch.randn(1), torch.randn(1)
    r = run_op("layer_norm", {"x": x, "weight": w, "bias": b}, {"eps": 1e-5})
    np.testing.assert_allclose(r.outputs[0], F.layer_norm(x, (1,), w, b, 1e-5).numpy(), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- RoPE


def rope_reference(x, position_ids, inv_freq, style, scaling):
    """LlamaRotaryEmbedding + apply_rotary_pos_emb (partial rotary as in Phi / GPT-NeoX; the
    interleaved layout as in GLM / Cohere), on x [B, T, H, D] in float64. The angle is computed in
    float32 exactly as transformers does; cos / sin and the rotation in float64."""
    B = x.shape[0]
    pos = position_ids if position_ids.dim() == 2 else position_ids[None]
    inv_freq_expanded = inv_freq[None, :, None].float().expand(pos.shape[0], -1, 1)
    position_ids_expanded = pos[:, None, :].float()
    freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)  # float32
    if style == "half":
        emb = torch.cat((freqs, freqs), dim=-1)
    else:
        emb = freqs.repeat_interleave(2, dim=-1)
    cos = (emb.double().cos() * scaling).expand(B, -1, -1).unsqueeze(2)  # unsqueeze over heads
    sin = (emb.double().sin() * scaling).expand(B, -1, -1).unsqueeze(2)
    R = emb.shape[-1]
    x_rot, x_pass = x[..., :R], x[..., R:]
    if style == "half":
        x1, x2 = x_rot[..., : R // 2], x_rot[..., R // 2:]
        rotated = torch.cat((-x2, x1), dim=-1)  # rotate_half
    else:
        x1, x2 = x_rot[..., ::2], x_rot[..., 1::2]
        rotated = torch.stack((-x2, x1), dim=-1).flatten(-2)
    return torch.cat((x_rot * cos + rotated * sin, x_pass), dim=-1)


def default_inv_freq(rot_dims, base=10000.0):
    return 1.0 / (base ** (torch.arange(0, rot_dims, 2, dtype=torch.int64).float() / rot_dims))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("style", ["half", "interleaved"])
@pytest.mark.parametrize(
    "B,T,H,D,R,pos_kind,scaling",
    [
        (1, 1, 3, 8, 8, "decode", 1.0),
        (2, 13, 3, 64, 64, "batch", 1.0),
        (1, 64, 9, 64, 64, "shared", 1.0),
        (2, 13, 9, 80, 32, "batch", 1.0),  # partial rotary
        (1, 64, 3, 80, 40, "shared", 1.2),  # partial, odd-quarter R, yarn-style scaling
        (3, 13, 3, 8, 4, "batch", 0.8),
    ],
)
def test_rope(dtype, style, B, T, H, D, R, pos_kind, scaling):
    x = torch.randn(B, T, H, D).to(dtype)
    if pos_kind == "decode":
        pos = torch.tensor([[4097]])
    elif pos_kind == "shared":
        pos = torch.arange(T) + 5
    else:  # arbitrary, e.g. packed sequences restarting at 0
        pos = torch.randint(0, 8192, (B, T))
    inv_freq = default_inv_freq(R, 500000.0 if D == 64 else 10000.0)
    x64 = leaf64(x)
    ref = rope_reference(x64, pos, inv_freq, style, scaling)
    g = torch.randn(ref.shape).to(dtype)
    ref.backward(g.double())
    r = run_op("rope", {"x": x, "position_ids": pos, "inv_freq": inv_freq},
               {"style": style, "attention_scaling": scaling}, grad_outputs=[g], requires_grad=["x"])
    check(r.outputs[0], ref, dtype, "rope: fwd")
    check(r.grads["x"], x64.grad, dtype, "rope: bwd")
    if R < D:  # the pass-through dims are copied exactly
        np.testing.assert_array_equal(r.outputs[0][..., R:], x.float()[..., R:].numpy())


def test_rope_bf16_matches_transformers_cos_sin():
    """transformers casts cos / sin to bf16 before rotating: ours matches that to one bf16 step."""
    x = torch.randn(1, 13, 3, 64).to(torch.bfloat16)
    pos = torch.arange(13)[None] * 300
    inv_freq = default_inv_freq(64)
    freqs = (inv_freq[None, :, None] @ pos[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(torch.bfloat16).unsqueeze(2), emb.sin().to(torch.bfloat16).unsqueeze(2)
    rot = torch.cat((-x[..., 32:], x[..., :32]), dim=-1)
    expect = (x.double() * cos.double() + rot.double() * sin.double()).float()
    ours = run_op("rope", {"x": x, "position_ids": pos, "inv_freq": inv_freq}).outputs[0]
    assert rel_err(ours, expect) <= 2 ** -8


# ---------------------------------------------------------------- cross-entropy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("N,V", [(1, 1000), (13, 1000), (64, 1000), (13, 49152), (7, 7)])
def test_cross_entropy(dtype, reduction, N, V):
    logits = (torch.randn(N, V) * 3).to(dtype)
    labels = torch.randint(0, V, (N,))
    if N > 1:
        labels[::3] = -100
    labels[-1] = V - 1
    l64 = leaf64(logits)
    ref = F.cross_entropy(l64, labels, reduction=reduction, ignore_index=-100)
    g = (torch.randn(ref.shape) if reduction == "none" else torch.tensor(1.7)).to(dtype)
    ref.backward(g.double())
    r = run_op("cross_entropy", {"logits": logits, "labels": labels}, {"reduction": reduction}, grad_outputs=[g],
               requires_grad=["logits"])
    check(r.outputs[0], ref, dtype, "cross_entropy: fwd")
    check(r.grads["logits"], l64.grad, dtype, "cross_entropy: bwd")
    ignored = (labels == -100).numpy()
    assert not r.grads["logits"][ignored].any()


def test_cross_entropy_large_logits_and_custom_ignore_index():
    logits = torch.randn(5, 1000) * 30
    logits[1, 3] = 1e4
    labels = torch.tensor([3, 3, 0, 999, 0])
    l64 = leaf64(logits)
    ref = F.cross_entropy(l64, labels, reduction="none", ignore_index=0)
    g = torch.randn(5)
    ref.backward(g.double())
    r = run_op("cross_entropy", {"logits": logits, "labels": labels}, {"reduction": "none", "ignore_index": 0},
               grad_outputs=[g], requires_grad=["logits"])
    np.testing.assert_allclose(r.outputs[0], ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    check(r.grads["logits"], l64.grad, torch.float32, "cross_entropy: bwd")


def test_cross_entropy_all_ignored_mean_is_nan_like_torch():
    logits = torch.randn(3, 10)
    labels = torch.full((3,), -100)
    lt = logits.clone().requires_grad_(True)
    ref = F.cross_entropy(lt, labels)
    ref.backward()
    r = run_op("cross_entropy", {"logits": logits, "labels": labels}, {"reduction": "mean"},
               grad_outputs=[torch.tensor(1.0)], requires_grad=["logits"])
    assert math.isnan(float(r.outputs[0])) and math.isnan(ref.item())
    np.testing.assert_array_equal(r.grads["logits"], lt.grad.numpy())


def test_cross_entropy_bad_label():
    with pytest.raises(OpError, match="label 10 .*vocab size 10"):
        run_op("cross_entropy", {"logits": torch.randn(2, 10), "labels": torch.tensor([1, 10])})


# ---- YaRN RoPE -----------------------------------------------------------------------------------------------------

YARN_CASES = {
    # GPT-OSS's defaults: unrounded ramp ends, attention factor 0.1 ln(32) + 1.
    "gpt_oss_defaults": dict(rope_type="yarn", rope_theta=150000.0, factor=32.0, beta_fast=32.0, beta_slow=1.0,
                             original_max_position_embeddings=4096, truncate=False),
    # Rounded ends (truncate default), other betas, a small factor.
    "truncated": dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, beta_fast=16.0, beta_slow=2.0,
                      original_max_position_embeddings=64),
    # DeepSeek-style mscale / mscale_all_dim, factor null: from the lengths (256 / 32).
    "mscale_factor_from_lengths": dict(rope_type="yarn", rope_theta=10000.0, factor=None, mscale=0.707,
                                       mscale_all_dim=1.0, original_max_position_embeddings=32),
    # An explicit attention_factor, and half of each head rotated.
    "attention_factor_partial": dict(rope_type="yarn", rope_theta=500000.0, factor=8.0, attention_factor=0.8,
                                     original_max_position_embeddings=128, partial_rotary_factor=0.5),
}


@pytest.mark.parametrize("case", YARN_CASES)
def test_yarn_frequencies_and_attention_scaling_match_transformers(case, tmp_path):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = dict(YARN_CASES[case])
    config = LlamaConfig(hidden_size=64, num_attention_heads=2, head_dim=32, max_position_embeddings=256,
                         rope_parameters=params)
    config.save_pretrained(str(tmp_path))
    inv_freq, scaling = ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")
    r = run_op("rope_frequencies", {}, {"model_dir": str(tmp_path)})
    np.testing.assert_allclose(r.outputs[0], inv_freq.numpy(), rtol=2e-7, atol=0)
    assert abs(float(r.outputs[1][0]) - scaling) <= 1e-12 * scaling, (float(r.outputs[1][0]), scaling)
    assert inv_freq.numel() * 2 == int(32 * params.get("partial_rotary_factor", 1.0))
