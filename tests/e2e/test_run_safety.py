"""Run safety as a user meets it, on the embedded tiny Llama: a diverging run stops (or skips its non-finite steps)
without losing its last good checkpoint; one run at a time per checkpoint_dir, with two real processes; Ctrl-C stops
cleanly, twice exits at once; nonsense recipe values are errors that name their key."""
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import time

import pytest

np = pytest.importorskip("numpy")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"
RECIPE = ROOT / "examples" / "llm_finetune" / "tiny_llama_squad.yaml"
PEFT_RECIPE = ROOT / "examples" / "llm_finetune" / "tiny_llama_squad_peft.yaml"
QUIET = ["--threads", "1", "--step_scheduler.val_every_steps", "100000", "--lr_scheduler.lr_warmup_steps", "1"]
LONG = ["--step_scheduler.max_steps", "100000", "--step_scheduler.ckpt_every_steps", "100000"]


def args_of(ckpt_dir, overrides, recipe=RECIPE):
    return [str(BIN), "finetune", "llm", "-c", str(recipe), *QUIET, "--checkpoint.checkpoint_dir", str(ckpt_dir),
            *map(str, overrides)]


def finetune(ckpt_dir, *overrides, env=None, recipe=RECIPE):
    return subprocess.run(args_of(ckpt_dir, overrides, recipe), capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def start(ckpt_dir, *overrides):
    return subprocess.Popen(args_of(ckpt_dir, overrides), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_steps(ckpt_dir, n, process):
    log = pathlib.Path(ckpt_dir) / "training.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < n):
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)


def jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def checkpoints(ckpt_dir):
    return sorted((p.name for p in pathlib.Path(ckpt_dir).iterdir() if p.is_dir() and p.name.startswith("epoch_")),
                  key=lambda name: int(name.rsplit("_", 1)[1]))


def latest(ckpt_dir):
    p = pathlib.Path(ckpt_dir) / "LATEST"
    return pathlib.Path(os.readlink(p) if p.is_symlink() else p.read_text().strip()).name


def weights_finite(checkpoint):
    tensors = safetensors_numpy.load_file(checkpoint / "model" / "consolidated" / "model.safetensors")
    return all(np.isfinite(t).all() for t in tensors.values())


def test_a_diverging_run_stops_at_its_first_nonfinite_step_and_keeps_the_last_finite_checkpoint(tmp_path):
    # lr 1e6: the loss stays finite for a few steps, then the gradient norm turns NaN; a checkpoint every step and
    # max_recent_checkpoints 2 (the recipe's) used to rotate the finite ones away, leaving only NaN checkpoints
    r = finetune(tmp_path, "--optimizer.lr", "1e6", "--step_scheduler.max_steps", 12,
                 "--step_scheduler.ckpt_every_steps", 1)
    assert r.returncode == 1, r.stdout + r.stderr
    m = re.search(r"error: training stopped at step (\d+): the (gradient norm|loss) is nan", r.stderr)
    assert m, r.stderr
    stopped_at = int(m.group(1))
    assert stopped_at >= 1
    log = jsonl(tmp_path / "training.jsonl")
    assert [rec["step"] for rec in log] == list(range(stopped_at + 1))  # the failing step is logged too
    assert log[-1]["grad_norm"] is None
    names = checkpoints(tmp_path)
    assert latest(tmp_path) == names[-1] == f"epoch_0_step_{stopped_at - 1}", (names, r.stderr)
    assert f"{names[-1]} (LATEST), holds finite weights" in r.stderr
    for name in names:
        assert weights_finite(tmp_path / name), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging directory or lock is left"


def test_a_passing_nonfinite_step_is_skipped_and_the_run_resumes_bit_for_bit(tmp_path):
    common = ["--step_scheduler.max_steps", 8, "--step_scheduler.ckpt_every_steps", 2,
              "--step_scheduler.skip_nonfinite_steps", "true"]
    nan_at_3 = {"AUTOMODEL_FAULT_INJECTION": "nan_loss_at_step:3"}  # test hook: step 3's loss becomes NaN
    r = finetune(tmp_path / "a", *common, env=nan_at_3)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "step 3 skipped: the loss is nan (1 skipped so far, 1 in a row)" in r.stdout
    log = jsonl(tmp_path / "a" / "training.jsonl")
    assert [rec["num_skipped_steps"] for rec in log] == [0, 0, 0, 1, 1, 1, 1, 1]
    assert log[3]["loss"] is None and log[3]["grad_norm"] is None
    assert log[4]["lr"] == log[3]["lr"]  # the schedule counts updates: the skipped step did not advance it
    assert all(rec["loss"] is not None for rec in log[4:])
    # resumed after the skip: the same losses, norms and learning rates, and the count goes on
    r = finetune(tmp_path / "b", *common, "--checkpoint.restore_from", tmp_path / "a" / "epoch_0_step_5")
    assert r.returncode == 0, r.stdout + r.stderr
    resumed = jsonl(tmp_path / "b" / "training.jsonl")
    assert [rec["step"] for rec in resumed] == [6, 7]
    for rec in resumed:
        full = log[rec["step"]]
        assert (rec["loss"], rec["grad_norm"], rec["lr"], rec["num_skipped_steps"]) == (
            full["loss"], full["grad_norm"], full["lr"], 1), rec["step"]


@pytest.mark.parametrize("clip", ["1.0", "none"])
def test_finite_steps_are_bit_for_bit_the_same_with_skipping_on(tmp_path, clip):
    """With clipping the norm pass comes first anyway; without, skipping moves the fused norm into a pass of its own."""
    clipping = ["--clip_grad_norm", "none"] if clip == "none" else ["--clip_grad_norm.max_norm", clip]
    common = ["--step_scheduler.max_steps", 4, "--checkpoint.enabled", "false", *clipping]
    plain = finetune(tmp_path / "plain", *common)
    skip = finetune(tmp_path / "skip", *common, "--step_scheduler.skip_nonfinite_steps", "true")
    assert plain.returncode == 0 and skip.returncode == 0, plain.stderr + skip.stderr
    a, b = jsonl(tmp_path / "plain" / "training.jsonl"), jsonl(tmp_path / "skip" / "training.jsonl")
    assert [(m["loss"], m["grad_norm"], m["lr"]) for m in a] == [(m["loss"], m["grad_norm"], m["lr"]) for m in b]


def test_too_many_skipped_steps_in_a_row_end_training(tmp_path):
    r = finetune(tmp_path, "--optimizer.lr", "1e6", "--step_scheduler.max_steps", 20,
                 "--step_scheduler.ckpt_every_steps", 1, "--step_scheduler.skip_nonfinite_steps", "true",
                 "--step_scheduler.max_consecutive_skipped_steps", 3)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "that makes 4 skipped steps in a row, more than step_scheduler.max_consecutive_skipped_steps = 3" \
        in r.stderr, r.stderr
    assert r.stdout.count(" skipped: ") == 3
    assert jsonl(tmp_path / "training.jsonl")[-1]["num_skipped_steps"] == 4
    names = checkpoints(tmp_path)
    assert latest(tmp_path) == names[-1]
    for name in names:  # skipped steps leave the weights as they were: finite
        assert weights_finite(tmp_path / name), name


def test_one_run_at_a_time_per_checkpoint_dir_and_a_dead_runs_lock_is_taken_over(tmp_path):
    first = start(tmp_path, *LONG)
    try:
        wait_for_steps(tmp_path, 2, first)
        second = finetune(tmp_path, "--step_scheduler.max_steps", 2)
        assert second.returncode == 1, second.stdout + second.stderr
        assert (f"is in use by another training run (pid {first.pid} on host {socket.gethostname()}, started "
                in second.stderr), second.stderr
        assert f"kill {first.pid}" in second.stderr and "another checkpoint.checkpoint_dir" in second.stderr
        assert not checkpoints(tmp_path), "the refused run wrote nothing"
    finally:
        first.kill()  # SIGKILL: the lock file stays, the kernel releases the lock
        first.communicate()
    assert (tmp_path / ".automodel.lock").exists()
    third = finetune(tmp_path, "--step_scheduler.max_steps", 2)
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"took over the lock of a run that ended without releasing it (pid {first.pid} on host" in third.stdout
    assert not (tmp_path / ".automodel.lock").exists()


def test_ctrl_c_finishes_the_step_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    p = start(tmp_path, *LONG)
    wait_for_steps(tmp_path, 3, p)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, out + err
    assert "press Ctrl-C again to exit at once" in err
    m = re.search(r"stopped on SIGINT after step (\d+), checkpoint (\S+)", out)
    assert m, out
    step = int(m.group(1))
    assert jsonl(tmp_path / "training.jsonl")[-1]["step"] == step
    assert checkpoints(tmp_path)[-1] == latest(tmp_path) == pathlib.Path(m.group(2)).name
    assert latest(tmp_path).endswith(f"_step_{step}")
    assert not (tmp_path / ".automodel.lock").exists()


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    p = start(tmp_path, *LONG)
    wait_for_steps(tmp_path, 3, p)
    p.send_signal(signal.SIGINT)
    # the second once the first was handled (two sent at once may arrive as one, as the kernel merges pending signals)
    line = ""
    while "press Ctrl-C again to exit at once" not in line:
        line = p.stderr.readline()
        assert line, "stderr closed before the first interrupt was acknowledged"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == -signal.SIGINT, (p.returncode, out, err)  # a shell reports 130
    assert "interrupted again: exiting now" in err
    assert "stopped on SIGINT" not in out
    # whatever was published is complete; the next run takes the lock over and resumes
    r = finetune(tmp_path, "--step_scheduler.max_steps", 2)
    assert r.returncode == 0, r.stdout + r.stderr


def bad_recipe(tmp_path, old, new):
    p = tmp_path / "bad.yaml"
    text = RECIPE.read_text()
    assert old in text
    p.write_text(text.replace(old, new))
    return p


@pytest.mark.parametrize("overrides,expected", [
    (["--step_scheduler.max_steps", "-5"],
     ["step_scheduler.max_steps must be >= 1, got -5", "where: command line --step_scheduler.max_steps"]),
    (["--step_scheduler.local_batch_size", "0"],
     ["step_scheduler.local_batch_size must be >= 1, got 0", "where: command line --step_scheduler.local_batch_size"]),
    (["--step_scheduler.val_every_steps", "0"], ["step_scheduler.val_every_steps must be >= 1, got 0"]),
    (["--clip_grad_norm.max_norm", "0"], ["clip_grad_norm.max_norm must be a positive finite number, got 0"]),
    (["--clip_grad_norm.max_norm", "-1"], ["clip_grad_norm.max_norm must be a positive finite number, got -1"]),
    (["--packed_sequence.packed_sequence_size", "-8"], ["packed_sequence.packed_sequence_size must be >= 0"]),
    (["--optimizer.lr", "-0.1"],
     ["optimizer.lr must be a finite number >= 0, got -0.1", "where: command line --optimizer.lr"]),
    (["--optimizer.weight_decay", "-1"], ["optimizer.weight_decay must be a finite number >= 0, got -1"]),
    (["--optimizer.eps", "-1e-8"], ["optimizer.eps must be a finite number >= 0, got -1e-08"]),
    (["--optimizer.betas", "[0.9, 1.5]"], ["optimizer.betas must lie in [0, 1), got 1.5"]),
])
def test_nonsense_values_are_errors_at_their_keys(tmp_path, overrides, expected):
    r = finetune(tmp_path / "ck", "--step_scheduler.max_steps", 2, *overrides)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith("error: "), r.stderr
    for e in expected:
        assert e in r.stderr, r.stderr


@pytest.mark.parametrize("value", [".inf", ".nan"])
def test_a_nonfinite_max_norm_in_the_yaml_is_an_error_at_its_line(tmp_path, value):
    recipe = bad_recipe(tmp_path, "max_norm: 1.0", f"max_norm: {value}")
    r = finetune(tmp_path / "ck", "--step_scheduler.max_steps", 2, recipe=recipe)
    assert r.returncode == 1, r.stdout + r.stderr
    line = recipe.read_text().splitlines().index(f"  max_norm: {value}") + 1
    assert f"clip_grad_norm.max_norm must be a positive finite number, got {value[1:]}" in r.stderr, r.stderr
    assert f"where: {recipe}:{line}" in r.stderr, r.stderr


def test_an_unusable_checkpoint_dir_names_the_directory_and_the_reason(tmp_path):
    (tmp_path / "file").write_text("x")
    r = finetune(tmp_path / "file" / "ck", "--step_scheduler.max_steps", 2)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "error: cannot create the checkpoint directory: Not a directory" in r.stderr, r.stderr
    assert f"where: {tmp_path / 'file' / 'ck'}" in r.stderr and "checkpoint.checkpoint_dir" in r.stderr
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o500)
        r = finetune(tmp_path / "ro", "--step_scheduler.max_steps", 2)
        assert r.returncode == 1 and "Permission denied" in r.stderr, r.stderr


def test_a_lora_checkpoint_restored_into_a_full_fine_tuning_run_says_so(tmp_path):
    r = finetune(tmp_path, "--step_scheduler.max_steps", 2, recipe=PEFT_RECIPE)
    assert r.returncode == 0, r.stdout + r.stderr
    r = finetune(tmp_path, "--step_scheduler.max_steps", 4)
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("the checkpoint holds a LoRA adapter (model/adapter_model.safetensors) but this recipe fine-tunes the whole "
            "model (it has no peft: section)") in r.stderr, r.stderr
    assert "config.yaml" in r.stderr
