"""The whole recipe is checked before any weights or data are read: a typo in any section fails at once, naming its
line and the key meant; and every part a checkpoint holds is read back on resume."""
import os
import pathlib
import shutil
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"
RECIPE = ROOT / "examples" / "llm_finetune" / "tiny_llama_squad.yaml"
PEFT_RECIPE = ROOT / "examples" / "llm_finetune" / "tiny_llama_squad_peft.yaml"

# The tiny recipe with model and data that do not exist: an error about them would mean they were looked at.
MISSING = {"assets/tiny-llama": "/nonexistent/tiny-llama", "assets/tiny-squad": "/nonexistent/tiny-squad"}

# (section, the block appended to the recipe in place of the section's own, the misspelled key, the key meant).
TYPOS = [
    ("step_scheduler", "step_scheduler:\n  max_steps: 2\n  ckpt_every_step: 1\n", "ckpt_every_step",
     "ckpt_every_steps"),
    ("rng", "rng:\n  seeed: 1\n", "seeed", "seed"),
    ("model", "model:\n  _target_: nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained\n"
              "  pretrained_model_name_or_path: /nonexistent/tiny-llama\n  torch_dtyp: bfloat16\n", "torch_dtyp",
     "torch_dtype"),
    ("tokenizer", "tokenizer:\n  pretrained_model_name_or_pat: x\n", "pretrained_model_name_or_pat",
     "pretrained_model_name_or_path"),
    ("checkpoint", "checkpoint:\n  max_recent_checkpoint: 2\n", "max_recent_checkpoint", "max_recent_checkpoints"),
    ("loss_fn", "loss_fn:\n  _target_: nemo_automodel.components.loss.masked_ce.MaskedCrossEntropy\n"
                "  ignore_indx: -100\n", "ignore_indx", "ignore_index"),
    ("dataset", "dataset:\n  _target_: nemo_automodel.components.datasets.llm.squad.make_squad_dataset\n"
                "  dataset_name: /nonexistent/tiny-squad\n  limit_dataset_sample: 8\n", "limit_dataset_sample",
     "limit_dataset_samples"),
    ("validation_dataset", "validation_dataset:\n"
                           "  _target_: nemo_automodel.components.datasets.llm.squad.make_squad_dataset\n"
                           "  dataset_name: /nonexistent/tiny-squad\n  splt: validation\n", "splt", "split"),
    ("dataloader", "dataloader:\n  shufle: true\n", "shufle", "shuffle"),
    ("dataloader", "dataloader:\n  collate_fn:\n    _target_: nemo_automodel.components.datasets.utils.default_collater\n"
                   "    pad_seq_len_divisable: 8\n", "collate_fn.pad_seq_len_divisable", "pad_seq_len_divisible"),
    ("validation_dataloader", "validation_dataloader:\n  drop_lst: true\n", "drop_lst", "drop_last"),
    ("optimizer", "optimizer:\n  _target_: torch.optim.AdamW\n  weight_decy: 0.1\n", "weight_decy", "weight_decay"),
    ("lr_scheduler", "lr_scheduler:\n  lr_warmup_step: 2\n", "lr_warmup_step", "lr_warmup_steps"),
    ("clip_grad_norm", "clip_grad_norm:\n  max_nrm: 1.0\n", "max_nrm", "max_norm"),
    ("peft", "peft:\n  target_module: ['*_proj']\n", "target_module", "target_modules"),
    ("distributed", "distributed:\n  activation_checkpoint: true\n", "activation_checkpoint", "activation_checkpointing"),
    ("packed_sequence", "packed_sequence:\n  packed_sequence_sze: 64\n", "packed_sequence_sze", "packed_sequence_size"),
]


def recipe_text(replaced_section=None):
    """The tiny recipe, its model and data moved out of reach, without the named top-level section."""
    text = RECIPE.read_text()
    for present, missing in MISSING.items():
        text = text.replace(present, missing)
    if replaced_section is None:
        return text
    lines, out, skipping = text.splitlines(keepends=True), [], False
    for line in lines:
        if line and not line[0].isspace() and not line.startswith("#"):
            skipping = line.split(":")[0] == replaced_section
        if not skipping:
            out.append(line)
    return "".join(out)


def run_recipe(path, ckpt_dir, *overrides):
    start = time.monotonic()
    r = subprocess.run([str(BIN), "finetune", "llm", "-c", str(path), "--threads", "2", "--checkpoint.checkpoint_dir",
                        str(ckpt_dir), *map(str, overrides)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    return r, time.monotonic() - start


@pytest.mark.parametrize("section,block,typo,meant", TYPOS, ids=[f"{t[0]}.{t[2]}" for t in TYPOS])
def test_a_typo_in_any_section_fails_before_weights_or_data_are_read(tmp_path, section, block, typo, meant):
    text = recipe_text(section) + "\n" + block
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    r, seconds = run_recipe(path, tmp_path / "ck")
    assert r.returncode == 1, r.stdout + r.stderr
    line = len(text.splitlines())  # the typo is the block's last line
    assert f"{path}:{line}: unknown key '{section}.{typo}'; did you mean '{meant}'?" in r.stderr, r.stderr
    assert "nonexistent" not in r.stderr, r.stderr  # neither the model nor the data was looked for
    assert not (tmp_path / "ck").exists(), "nothing is written before the recipe is checked"
    assert seconds < 1.0, seconds


@pytest.mark.parametrize("override,expected", [
    (["--optimizer._target_", "torch.optim.AdamX"], "unknown _target_ 'torch.optim.AdamX'"),
    (["--loss_fn._target_", "torch.optim.AdamW"], "loss_fn._target_ 'torch.optim.AdamW' cannot build a loss_fn"),
    (["--dataset._target_", "nemo_automodel.components.loss.masked_ce.MaskedCrossEntropy"], "cannot build a dataset"),
    (["--step_scheduler.gc_every_steps", "0"], "step_scheduler.gc_every_steps must be >= 1"),
    (["--step_scheduler.max_steps", "-3"], "step_scheduler.max_steps must be >= 1"),
    (["--dataloader.collate_fn.pad_seq_len_divisible", "0"], "pad_seq_len_divisible must be >= 1"),
    (["--packed_sequence.packed_sequence_size", "-1"], "packed_sequence_size must be >= 0"),
    (["--peft.dim", "0"], "peft"),
])
def test_wrong_targets_and_values_that_need_no_data_fail_before_it_is_read(tmp_path, override, expected):
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe_text())
    r, seconds = run_recipe(path, tmp_path / "ck", *override)
    assert r.returncode == 1, r.stdout + r.stderr
    assert expected in r.stderr and "nonexistent" not in r.stderr, r.stderr
    assert seconds < 1.0, seconds


def test_sections_nemo_writes_for_gpus_are_accepted(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe_text() + "\ndist_env:\n  backend: nccl\n  timeout_minutes: 1\n"
                    "compile:\n  enabled: false\n  mode: default\n  fullgraph: false\n  dynamic: true\n")
    r, _ = run_recipe(path, tmp_path / "ck")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "/nonexistent/tiny-llama" in r.stderr, r.stderr  # past the check, on to loading the model


def checkpoint_entries(ckpt):
    """What a checkpoint holds besides the recipe it was written with and its completion marker."""
    return sorted(p.name for p in ckpt.iterdir() if p.name != "config.yaml" and not p.name.startswith("."))


@pytest.mark.parametrize("recipe", [RECIPE, PEFT_RECIPE], ids=["full", "lora"])
def test_every_part_a_checkpoint_holds_is_read_on_resume(tmp_path, recipe):
    """Each entry of a checkpoint, removed, makes the resume fail naming it: nothing is written and left unread."""
    common = ["--step_scheduler.max_steps", 4, "--step_scheduler.ckpt_every_steps", 2,
              "--step_scheduler.val_every_steps", 100, "--dataset.limit_dataset_samples", 64,
              "--lr_scheduler.lr_warmup_steps", 1]
    first = tmp_path / "first"
    r = subprocess.run([str(BIN), "finetune", "llm", "-c", str(recipe), "--threads", "2",
                        "--checkpoint.checkpoint_dir", str(first), *map(str, common)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    saved = first / "epoch_0_step_1"
    entries = checkpoint_entries(saved)
    assert {"model", "optim", "dataloader", "rng", "step_scheduler.json"} <= set(entries), entries
    for entry in entries:
        ck = tmp_path / entry.replace(".", "_")
        shutil.copytree(saved, ck / saved.name, symlinks=True)
        victim = ck / saved.name / entry
        shutil.rmtree(victim) if victim.is_dir() else victim.unlink()
        r = subprocess.run([str(BIN), "finetune", "llm", "-c", str(recipe), "--threads", "2",
                            "--checkpoint.checkpoint_dir", str(ck), "--checkpoint.restore_from", saved.name,
                            *map(str, common)], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 1, (entry, r.stdout + r.stderr)
        assert entry in r.stderr, (entry, r.stderr)
    # and whole, the checkpoint resumes
    r = subprocess.run([str(BIN), "finetune", "llm", "-c", str(recipe), "--threads", "2",
                        "--checkpoint.checkpoint_dir", str(first), "--checkpoint.restore_from", saved.name,
                        *map(str, common)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0 and "resuming from" in r.stdout, r.stdout + r.stderr
