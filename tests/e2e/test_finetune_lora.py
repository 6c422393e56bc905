"""LoRA through the recipe (`peft:` section) on the embedded tiny Llama: checkpoints hold a peft adapter that
`PeftModel.from_pretrained` loads, `automodel merge-lora` folds it into the base as peft's merge does, and resume is
bit-exact."""
import json
import os
import pathlib
import subprocess

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"
RECIPE = ROOT / "examples" / "llm_finetune" / "tiny_llama_squad_peft.yaml"
BASE = ROOT / "assets" / "tiny-llama"
RUN = ["--step_scheduler.max_steps", 40, "--step_scheduler.val_every_steps", 20, "--step_scheduler.ckpt_every_steps",
       20, "--lr_scheduler.lr_warmup_steps", 4, "--threads", 2]


def finetune(ckpt_dir, *overrides):
    args = [str(BIN), "finetune", "llm", "-c", str(RECIPE), "--checkpoint.checkpoint_dir", str(ckpt_dir),
            *map(str, overrides)]
    return subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=ROOT)


def jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("lora")
    r = finetune(d, *RUN)
    assert r.returncode == 0, r.stdout + r.stderr
    return d


def test_lora_trains_and_checkpoints_only_the_adapter(trained):
    val = jsonl(trained / "validation.jsonl")
    assert val[-1]["val_loss"] < val[0]["val_loss"], val
    model_dir = trained / "epoch_0_step_39" / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    cfg = json.loads((model_dir / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 16 and cfg["lora_alpha"] == 32


def test_adapter_loads_in_peft_and_merge_lora_matches_merge_and_unload(trained, tmp_path):
    adapter = trained / "epoch_0_step_39" / "model"
    base = transformers.AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(base, adapter)
    ids = torch.tensor([[0, 57, 301, 12, 88, 140, 7, 255, 3, 99, 410, 21]])
    with torch.no_grad():
        ref = model(ids).logits
        with model.disable_adapter():
            base_logits = model(ids).logits
    merged_ref = model.merge_and_unload()
    assert not torch.allclose(ref, base_logits), "the trained adapter changes the output"

    r = subprocess.run([str(BIN), "merge-lora", "--base", str(BASE), "--adapter", str(adapter), "--out",
                        str(tmp_path / "merged")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    with torch.no_grad():
        ours = merged(ids).logits
    assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max()
    for (name, a), (_, b) in zip(merged.state_dict().items(), merged_ref.state_dict().items()):
        assert (a - b).abs().max() <= 1e-6 * max(1.0, b.abs().max().item()), name


def test_lora_resume_reproduces_the_uninterrupted_losses_bit_for_bit(trained, tmp_path):
    r = finetune(tmp_path, *RUN, "--checkpoint.restore_from", trained / "epoch_0_step_19")
    assert r.returncode == 0, r.stdout + r.stderr
    full = {m["step"]: m for m in jsonl(trained / "training.jsonl")}
    resumed = jsonl(tmp_path / "training.jsonl")
    assert [m["step"] for m in resumed] == list(range(20, 40))
    for m in resumed:
        assert (m["loss"], m["grad_norm"]) == (full[m["step"]]["loss"], full[m["step"]]["grad_norm"]), m["step"]


def test_bad_peft_sections_fail_clearly(tmp_path):
    for overrides, expected in [(["--peft.dim", 0], "dim"), (["--peft.alpha", -1], "alpha"),
                                (["--peft.target_modules", "nothing_matches"], "matches no linear layer"),
                                (["--peft.exclude_modules", "['*o_proj']"], "exclude_modules")]:
        r = finetune(tmp_path / "ck", *overrides)
        assert r.returncode == 1 and r.stderr.startswith("error: ") and expected in r.stderr, (overrides, r.stderr)
