"""`optimizer._target_: torchao.optim.AdamW8bit` through the recipe, on the embedded tiny Llama: the loss falls as
with AdamW, optim/ holds the 8-bit moments (codes + block scales) at about a quarter of AdamW's bytes, and resuming
from a checkpoint reproduces the uninterrupted run bit for bit, also for bf16 weights with split fp32 masters."""
import json
import os
import pathlib
import subprocess

import pytest

safe_open = pytest.importorskip("safetensors").safe_open

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"
RECIPE = ROOT / "examples" / "llm_finetune" / "tiny_llama_squad.yaml"
ADAMW8BIT = ["--optimizer._target_", "torchao.optim.AdamW8bit"]
COMMON = ["--step_scheduler.max_steps", 40, "--step_scheduler.ckpt_every_steps", 20,
          "--step_scheduler.val_every_steps", 1000]


def finetune(ckpt_dir, *overrides, threads=2):
    args = [str(BIN), "finetune", "llm", "-c", str(RECIPE), "--threads", str(threads), "--checkpoint.checkpoint_dir",
            str(ckpt_dir), *map(str, overrides)]
    return subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=ROOT)


def jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def optim_tensors(ckpt):
    with safe_open(str(ckpt / "optim" / "optimizer.safetensors"), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """40 steps of the default recipe with AdamW8bit and with AdamW, checkpoints at steps 19 and 39."""
    out = {}
    for name, extra in (("8bit", ADAMW8BIT), ("adamw", [])):
        d = tmp_path_factory.mktemp(name)
        r = finetune(d, *COMMON, *extra)
        assert r.returncode == 0, r.stdout + r.stderr
        out[name] = d
    return out


def test_loss_falls_as_with_adamw(runs):
    q, f = jsonl(runs["8bit"] / "training.jsonl"), jsonl(runs["adamw"] / "training.jsonl")
    assert [m["step"] for m in q] == list(range(40))
    first, last = sum(m["loss"] for m in q[:5]) / 5, sum(m["loss"] for m in q[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    last_f = sum(m["loss"] for m in f[-5:]) / 5
    assert abs(last - last_f) <= 0.05 * last_f, (last, last_f)


def test_checkpoint_holds_8bit_moments(runs):
    ck = runs["8bit"] / "epoch_0_step_39"
    meta = json.loads((ck / "optim" / "optimizer.json").read_text())
    assert meta["extra"]["optimizer"] == "AdamW8bit"
    t = optim_tensors(ck)
    # 32768 elements: 8-bit, one byte per element packed four to an int32, one scale per 256-element block
    emb = "model.embed_tokens.weight"
    assert t[f"{emb}.exp_avg.codes"].dtype.name == "int32" and t[f"{emb}.exp_avg.codes"].shape == (32768 // 4,)
    assert t[f"{emb}.exp_avg_sq.scale"].shape == (32768 // 256,)
    assert f"{emb}.exp_avg" not in t
    # 2048 elements (< 4096): fp32 moments, as torchao keeps them
    k = "model.layers.0.self_attn.k_proj.weight"
    assert t[f"{k}.exp_avg"].dtype.name == "float32" and t[f"{k}.exp_avg_sq"].size == 2048
    size_8bit = (ck / "optim" / "optimizer.safetensors").stat().st_size
    size_adamw = (runs["adamw"] / "epoch_0_step_39" / "optim" / "optimizer.safetensors").stat().st_size
    assert size_8bit < 0.4 * size_adamw, (size_8bit, size_adamw)


def test_resume_reproduces_the_uninterrupted_losses_bit_for_bit(runs, tmp_path):
    d = runs["8bit"]
    r = finetune(tmp_path, *COMMON, *ADAMW8BIT, "--checkpoint.restore_from", d / "epoch_0_step_19")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming from" in r.stdout
    full = {m["step"]: m for m in jsonl(d / "training.jsonl")}
    resumed = jsonl(tmp_path / "training.jsonl")
    assert [m["step"] for m in resumed] == list(range(20, 40))
    for m in resumed:
        assert (m["loss"], m["grad_norm"]) == (full[m["step"]]["loss"], full[m["step"]]["grad_norm"]), m["step"]


@pytest.mark.parametrize("optimizer", ["torchao.optim.AdamW8bit", "torch.optim.AdamW"])
def test_bf16_resume_with_split_masters_is_bit_exact(tmp_path, optimizer):
    """bf16 weights: the fp32 masters are stored as bf16 weight + 16-bit residual; a checkpoint writes them as fp32
    `<param>.fp32_master` and a restore splits them again. One thread: bf16 GEMMs are reproducible run to run there."""
    common = ["--model.torch_dtype", "bfloat16", "--optimizer._target_", optimizer, "--step_scheduler.max_steps", 16,
              "--step_scheduler.ckpt_every_steps", 8, "--step_scheduler.val_every_steps", 1000,
              "--lr_scheduler.lr_warmup_steps", 2]
    r = finetune(tmp_path / "full", *common, threads=1)
    assert r.returncode == 0, r.stdout + r.stderr
    t = optim_tensors(tmp_path / "full" / "epoch_0_step_7")
    master = t["model.embed_tokens.weight.fp32_master"]
    assert master.dtype.name == "float32" and master.shape == (512 * 64,)  # flat buffers: 1-D slices, as today
    r = finetune(tmp_path / "resumed", *common, "--checkpoint.restore_from", tmp_path / "full" / "epoch_0_step_7",
                 threads=1)
    assert r.returncode == 0, r.stdout + r.stderr
    full = {m["step"]: m for m in jsonl(tmp_path / "full" / "training.jsonl")}
    resumed = jsonl(tmp_path / "resumed" / "training.jsonl")
    assert [m["step"] for m in resumed] == list(range(8, 16))
    for m in resumed:
        assert (m["loss"], m["grad_norm"]) == (full[m["step"]]["loss"], full[m["step"]]["grad_norm"]), m["step"]


def test_bf16_stochastic_round_trains_without_masters_and_resumes(tmp_path):
    """bf16_stochastic_round: bf16 weights with no fp32 master (the leanest configuration), the loss still falls as
    with fp32 masters, optim/ holds no master, and a resume is bit-exact (the rounding is a hash of step and index)."""
    common = ["--model.torch_dtype", "bfloat16", *ADAMW8BIT, "--step_scheduler.max_steps", 40,
              "--step_scheduler.ckpt_every_steps", 20, "--step_scheduler.val_every_steps", 1000]
    r = finetune(tmp_path / "sr", *common, "--optimizer.bf16_stochastic_round", "true", threads=1)
    assert r.returncode == 0, r.stdout + r.stderr
    r = finetune(tmp_path / "master", *common, threads=1)
    assert r.returncode == 0, r.stdout + r.stderr
    sr, master = jsonl(tmp_path / "sr" / "training.jsonl"), jsonl(tmp_path / "master" / "training.jsonl")
    first, last = sum(m["loss"] for m in sr[:5]) / 5, sum(m["loss"] for m in sr[-5:]) / 5
    last_master = sum(m["loss"] for m in master[-5:]) / 5
    assert last < 0.7 * first and abs(last - last_master) <= 0.05 * last_master, (first, last, last_master)
    assert not [k for k in optim_tensors(tmp_path / "sr" / "epoch_0_step_19") if k.endswith("fp32_master")]
    r = finetune(tmp_path / "resumed", *common, "--optimizer.bf16_stochastic_round", "true", "--checkpoint.restore_from",
                 tmp_path / "sr" / "epoch_0_step_19", threads=1)
    assert r.returncode == 0, r.stdout + r.stderr
    full = {m["step"]: m for m in sr}
    for m in jsonl(tmp_path / "resumed" / "training.jsonl"):
        assert (m["loss"], m["grad_norm"]) == (full[m["step"]]["loss"], full[m["step"]]["grad_norm"]), m["step"]


@pytest.mark.parametrize("overrides,expected", [
    (["--optimizer._target_", "bitsandbytes.optim.AdamW8bit"], ["bitsandbytes", "torchao.optim.AdamW8bit"]),
    (ADAMW8BIT + ["--optimizer.amsgrad", "true"], ["amsgrad", "not supported"]),
    (ADAMW8BIT + ["--optimizer.momentum", "0.9"], ["momentum", "block_size"]),
    (ADAMW8BIT + ["--optimizer.block_size", "0"], ["block_size", ">= 1"]),
    (ADAMW8BIT + ["--optimizer.betas", "[0.9, 1.5]"], ["optimizer.betas must lie in [0, 1), got 1.5"]),
])
def test_bad_8bit_optimizer_sections_fail_with_a_clear_error(tmp_path, overrides, expected):
    r = finetune(tmp_path, "--step_scheduler.max_steps", 2, "--checkpoint.enabled", "false", *overrides)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith("error: "), r.stderr
    for e in expected:
        assert e in r.stderr, r.stderr
