"""components/optim against torch.optim and torch.nn.utils.clip_grad_norm_: N steps on random
parameters with a given random gradient per step; parameters after the steps within 1e-6 relative
(fp32) of torch run in fp32 on the same inputs."""
import math

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
