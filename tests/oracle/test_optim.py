"""components/optim against torch.optim and torch.nn.utils.clip_grad_norm_: N steps on random
parameters with a given random gradient per step; parameters after the steps within 1e-6 relative
(fp32) of torch run in fp32 on the same inputs. AdamW8bit against torchao.optim.AdamW8bit: its
quantization maps and block quantizer bit for bit, steps within TOL_8BIT."""
import math

import numpy as np
import pytest
import torch

from conftest import BF16, assert_close, rel_err, run_op

OPT_F32 = 1e-6
STEPS = 5
SHAPES = [(37,), (16, 33), (5, 3, 7), (1,)]


def _torch_opt(name, params, cfg):
    groups = [{"params": [params[j] for j in range(len(params)) if cfg["group_of"][j] == gi], "lr": lr,
               "weight_decay": wd} for gi, (lr, wd) in enumerate(cfg["groups"])]
    if name == "adamw":
        return torch.optim.AdamW(groups, betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"])
    if name == "adam":
        return torch.optim.Adam(groups, betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"])
    return torch.optim.SGD(groups, momentum=cfg["momentum"], dampening=cfg["dampening"], nesterov=cfg["nesterov"])


CONFIGS = {
    "adamw": dict(beta1=0.9, beta2=0.999, eps=1e-8),
    "adamw_b095": dict(beta1=0.8, beta2=0.95, eps=1e-6),
    "adam": dict(beta1=0.9, beta2=0.999, eps=1e-8),
    "sgd_momentum": dict(momentum=0.9, dampening=0.1, nesterov=False),
    "sgd_nesterov": dict(momentum=0.9, dampening=0.0, nesterov=True),
    "sgd_plain": dict(momentum=0.0, dampening=0.0, nesterov=False),
}


def _run(case, flat, dtype=torch.float32):
    name = case.split("_")[0]
    cfg = dict(CONFIGS[case])
    cfg.update(groups=[[1e-2, 0.1], [3e-2, 0.0]], group_of=[0, 1, 0, 1])
    params0 = [torch.randn(s).to(dtype) for s in SHAPES]
    grads = [[torch.randn(s).to(dtype) for s in SHAPES] for _ in range(STEPS)]
    inputs = {f"p{j}": p for j, p in enumerate(params0)}
    for s in range(STEPS):
        for j, g in enumerate(grads[s]):
            inputs[f"g{s}_{j}"] = g
    params = dict(optimizer=name, num_params=len(SHAPES), steps=STEPS, flat=flat, lr=1e-2, **cfg)
    ours = run_op("optim_steps", inputs, params).outputs
    # Reference: torch.optim in fp32 from the same (possibly bf16-rounded) inputs; for bf16, our
    # documented semantics: fp32 state and update, parameters rounded to bf16 after every step.
    ref = [p.float().clone().requires_grad_(True) for p in params0]
    opt = _torch_opt(name, ref, cfg)
    for s in range(STEPS):
        for j, p in enumerate(ref):
            p.grad = grads[s][j].float().clone()
        opt.step()
        if dtype == torch.bfloat16:
            with torch.no_grad():
                for p in ref:
                    p.copy_(p.bfloat16().float())
    return ours, ref


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("case", list(CONFIGS))
def test_optimizer_steps_f32(case, flat):
    ours, ref = _run(case, flat)
    errs = [rel_err(o, r) for o, r in zip(ours, ref)]
    print(f"{case} flat={flat}: max rel err {max(errs):.3e}")
    for j, (o, r) in enumerate(zip(ours, ref)):
        assert_close(o, r, OPT_F32, f"{case} param {j}")


@pytest.mark.parametrize("case", ["adamw", "adam", "sgd_nesterov"])
def test_optimizer_steps_bf16(case):
    ours, ref = _run(case, True, torch.bfloat16)
    for j, (o, r) in enumerate(zip(ours, ref)):
        # bf16 outputs come back as f32
        print(f"{case} bf16 param {j}: rel err {rel_err(o, r):.3e}")
        assert_close(o, r, BF16, f"{case} bf16 param {j}")


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm(norm_type, max_norm):
    grads = [torch.randn(s) for s in SHAPES]
    r = run_op("clip_grad_norm", {f"g{j}": g for j, g in enumerate(grads)},
               dict(num_grads=len(grads), max_norm=max_norm, norm_type=norm_type))
    ref = [torch.zeros(s, requires_grad=True) for s in SHAPES]
    for p, g in zip(ref, grads):
        p.grad = g.clone()
    nt = math.inf if norm_type == "inf" else norm_type
    total = torch.nn.utils.clip_grad_norm_(ref, max_norm, norm_type=nt)
    exact = torch.linalg.vector_norm(torch.cat([g.double().flatten() for g in grads]), ord=nt)
    print(f"clip norm_type={norm_type} max_norm={max_norm}: total rel err vs fp64 "
          f"{abs(float(r.outputs[0]) - float(exact)) / float(exact):.3e}")
    assert abs(float(r.outputs[0]) - float(exact)) <= 1e-12 * float(exact)
    assert abs(float(r.outputs[0]) - float(total)) <= 1e-6 * float(total)
    for j, p in enumerate(ref):
        assert_close(r.outputs[1 + j], p.grad, 1e-6, f"clipped grad {j}")


# ---- torchao.optim.AdamW8bit: 8-bit block-wise moments ----

def _torchao():
    return pytest.importorskip("torchao.optim")


def test_quant8_maps_are_torchaos_bit_for_bit():
    subclass_8bit = pytest.importorskip("torchao.optim.subclass_8bit")
    ours = run_op("quant8_maps", {}).outputs
    for o, ref in zip(ours, [subclass_8bit.get_qmap_signed(), subclass_8bit.get_qmap_unsigned()]):
        ref = torch.tensor(ref, dtype=torch.float32).numpy()
        assert o.dtype == ref.dtype and (o.view("u4") == ref.view("u4")).all(), np.flatnonzero(o != ref)[:10]


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("block_size", [256, 64])
def test_quant8_block_quantization_matches_torchao_exactly(signed, block_size):
    quant_utils = pytest.importorskip("torchao.optim.quant_utils")
    subclass_8bit = pytest.importorskip("torchao.optim.subclass_8bit")
    qmap = torch.tensor(subclass_8bit.get_qmap_signed() if signed else subclass_8bit.get_qmap_unsigned())
    g = torch.Generator().manual_seed(3)
    blocks = [torch.randn(block_size, generator=g) * 10.0 ** e for e in (-8, -3, 0, 2)]
    blocks += [torch.randn(block_size, generator=g) ** 2,                            # v-like: squares
               torch.zeros(block_size),                                              # scale clipped to 1e-12
               torch.full((block_size,), -2.0),                                      # absmax negative: -1 is no code
               torch.randn(block_size, generator=g) * torch.rand(block_size, generator=g) ** 8]
    x = torch.cat(blocks)
    if not signed:
        x = x.abs()
    codes, scales = run_op("quant8_quantize", {"x": x}, dict(block_size=block_size, signed=signed)).outputs
    scaled, ref_scales = quant_utils.scale_tensor(x, block_size)
    ref_codes = quant_utils.quantize_8bit_with_qmap(scaled, qmap)
    assert (scales.view("u4") == ref_scales.numpy().view("u4")).all()
    assert (codes == ref_codes.int().numpy()).all(), np.flatnonzero(codes != ref_codes.int().numpy())[:10]


# Parameters of 4096 elements or more whose count block_size divides get 8-bit moments; the others fp32 ones.
SHAPES_8BIT = [(64, 64), (37,), (16, 512), (4099,), (2, 2048)]
TOL_8BIT = 1e-6  # measured: 1.1e-7 (parameters and moments)


def _torchao_steps(params0, grads, cfg, lr):
    ao = _torchao()
    ref = [p.clone().requires_grad_(True) for p in params0]
    groups = [{"params": [ref[j] for j in range(len(ref)) if cfg["group_of"][j] == gi], "lr": glr, "weight_decay": gwd}
              for gi, (glr, gwd) in enumerate(cfg["groups"])]
    opt = ao.AdamW8bit(groups, lr=lr, betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"],
                       block_size=cfg["block_size"])
    for step_grads in grads:
        for p, g in zip(ref, step_grads):
            p.grad = g.float().clone()
        opt.step()
    moments = []
    for p in ref:
        st = opt.state[p]
        for key in ("exp_avg", "exp_avg_sq"):
            m = st[key]
            moments.append((m.dequantize() if hasattr(m, "dequantize") else m).float().flatten())
    return ref, moments


@pytest.mark.parametrize("block_size", [256, 128])
@pytest.mark.parametrize("flat", [False, True])
def test_adamw8bit_steps_match_torchao(flat, block_size):
    """Our AdamW8bit against torchao's (torch.compile'd on the CPU) over 5 steps on random tensors: parameters and
    dequantized moments within TOL_8BIT of the reference's magnitude. They agree to the fp32 rounding of the update
    (inductor's and our compiler's contractions differ); a moment whose value lands at a code's rounding threshold
    may then take the neighbouring code, which moves that element by a fraction of a code step."""
    _torchao()
    cfg = dict(beta1=0.9, beta2=0.99, eps=1e-8, block_size=block_size, groups=[[1e-2, 0.1], [3e-2, 0.0]],
               group_of=[0, 1, 0, 1, 0])
    g = torch.Generator().manual_seed(11)
    params0 = [torch.randn(s, generator=g) for s in SHAPES_8BIT]
    grads = [[torch.randn(s, generator=g) * 0.1 for s in SHAPES_8BIT] for _ in range(STEPS)]
    inputs = {f"p{j}": p for j, p in enumerate(params0)}
    for s in range(STEPS):
        for j, gr in enumerate(grads[s]):
            inputs[f"g{s}_{j}"] = gr
    r = run_op("optim_steps", inputs, dict(optimizer="adamw8bit", num_params=len(SHAPES_8BIT), steps=STEPS, flat=flat,
                                           lr=1e-2, moments=True, **cfg))
    ref, ref_moments = _torchao_steps(params0, grads, cfg, 1e-2)
    k = len(SHAPES_8BIT)
    errs = []
    for j in range(k):
        errs.append(rel_err(r.outputs[j], ref[j]))
        assert_close(r.outputs[j], ref[j], TOL_8BIT, f"param {j} {SHAPES_8BIT[j]}")
    for i, m in enumerate(ref_moments):
        errs.append(rel_err(r.outputs[k + i], m))
        assert_close(r.outputs[k + i], m, TOL_8BIT, f"moment {i % 2} of param {i // 2}")
    print(f"AdamW8bit flat={flat} block_size={block_size}: max rel err {max(errs):.3e}")


def test_adamw8bit_bf16_with_fp32_masters_matches_torchao_on_the_masters():
    """bf16 parameters with fp32 masters: torchao run on fp32 copies (the masters) with the same bf16 gradients; our
    masters follow its parameters, our bf16 parameters are their rounding."""
    _torchao()
    cfg = dict(beta1=0.9, beta2=0.999, eps=1e-8, block_size=256, groups=[[1e-3, 0.01]], group_of=[0] * 5)
    g = torch.Generator().manual_seed(5)
    params0 = [torch.randn(s, generator=g).bfloat16() for s in SHAPES_8BIT]
    grads = [[(torch.randn(s, generator=g) * 0.1).bfloat16() for s in SHAPES_8BIT] for _ in range(STEPS)]
    inputs = {f"p{j}": p for j, p in enumerate(params0)}
    for s in range(STEPS):
        for j, gr in enumerate(grads[s]):
            inputs[f"g{s}_{j}"] = gr
    r = run_op("optim_steps", inputs, dict(optimizer="adamw8bit", num_params=5, steps=STEPS, flat=True, lr=1e-3,
                                           master=True, **cfg))
    ref, _ = _torchao_steps([p.float() for p in params0], grads, cfg, 1e-3)
    for j in range(5):
        master = r.outputs[5 + j].reshape(ref[j].shape)
        assert_close(master, ref[j], TOL_8BIT, f"master {j}")
        # the bf16 parameter is the rounding of our master, exactly
        assert (torch.from_numpy(r.outputs[j]).flatten() == torch.from_numpy(master).bfloat16().float().flatten()).all()
