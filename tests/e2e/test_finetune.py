"""`automodel finetune llm -c recipe.yaml` run as a user runs it, on the embedded tiny Llama and SQuAD-shaped data:
loss falls, the checkpoint loads in transformers, resume is bit-exact, SIGTERM and a killed save are safe."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"
RECIPE = ROOT / "examples" / "llm_finetune" / "tiny_llama_squad.yaml"
THREADS = ["--threads", "2"]


def finetune(ckpt_dir, *overrides, env=None, recipe=RECIPE):
    args = [str(BIN), "finetune", "llm", "-c", str(recipe), *THREADS, "--checkpoint.checkpoint_dir", str(ckpt_dir),
            *map(str, overrides)]
    return subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def checkpoints(ckpt_dir):
    return sorted(p.name for p in pathlib.Path(ckpt_dir).iterdir() if p.is_dir() and p.name.startswith("epoch_"))


def latest(ckpt_dir):
    p = pathlib.Path(ckpt_dir) / "LATEST"
    return os.readlink(p) if p.is_symlink() else p.read_text().strip()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 60-step run of the default recipe, validation every 20 steps, checkpoints every 30."""
    d = tmp_path_factory.mktemp("run")
    r = finetune(d, "--step_scheduler.max_steps", 60, "--step_scheduler.val_every_steps", 20,
                 "--step_scheduler.ckpt_every_steps", 30)
    assert r.returncode == 0, r.stdout + r.stderr
    return d, r


def test_training_and_validation_loss_fall(trained):
    d, r = trained
    train = jsonl(d / "training.jsonl")
    assert [m["step"] for m in train] == list(range(60))
    for key in ("loss", "grad_norm", "lr", "mem", "tps", "num_label_tokens", "epoch"):
        assert key in train[0], train[0]
    first = sum(m["loss"] for m in train[:5]) / 5
    last = sum(m["loss"] for m in train[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    val = jsonl(d / "validation.jsonl")
    assert [m["step"] for m in val] == [19, 29, 39, 59], val  # every 20 steps and at each checkpoint
    assert val[-1]["val_loss"] < 0.8 * val[0]["val_loss"], val


def test_checkpoint_layout(trained):
    d, _ = trained
    assert checkpoints(d) == ["epoch_0_step_29", "epoch_0_step_59"]
    assert latest(d).endswith("epoch_0_step_59")
    ck = d / "epoch_0_step_59"
    for rel in ("config.yaml", "model/consolidated/config.json", "model/consolidated/model.safetensors",
                "model/consolidated/generation_config.json", "model/consolidated/tokenizer.json",
                "model/consolidated/tokenizer_config.json", "model/consolidated/chat_template.jinja",
                "optim", "dataloader", "rng"):
        assert (ck / rel).exists(), rel
    assert not [p for p in d.iterdir() if p.name.startswith(".")], "no staging directory is left behind"
    cfg = (ck / "config.yaml").read_text()
    assert "max_steps: 60" in cfg and "checkpoint_dir:" in cfg  # the resolved config, overrides applied


def test_consolidated_checkpoint_loads_in_transformers_with_identical_logits(trained):
    d, _ = trained
    model_dir = d / "epoch_0_step_59" / "model" / "consolidated"
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    ids = tok("Context: Kaloren is a town on the river Selvel. Question: On which river is Kaloren? Answer: ")[
        "input_ids"]
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    ref = [logp[i, ids[i + 1]].item() for i in range(len(ids) - 1)]
    r = subprocess.run([str(BIN), "logprobs", "--model", str(model_dir), "--prompt-ids", ",".join(map(str, ids))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ours = json.loads(r.stdout)
    ours = ours["logprobs"] if isinstance(ours, dict) else ours
    assert len(ours) == len(ref)
    assert max(abs(a - b) for a, b in zip(ours, ref)) <= 1e-5 * max(1.0, max(abs(x) for x in ref))
    # the fine-tuned weights differ from the base model's
    base = transformers.AutoModelForCausalLM.from_pretrained(ROOT / "assets" / "tiny-llama", dtype=torch.float32)
    assert not torch.equal(base.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_resume_reproduces_the_uninterrupted_losses_bit_for_bit(trained, tmp_path):
    d, _ = trained
    r = finetune(tmp_path, "--step_scheduler.max_steps", 60, "--step_scheduler.val_every_steps", 20,
                 "--step_scheduler.ckpt_every_steps", 30, "--checkpoint.restore_from", d / "epoch_0_step_29")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming from" in r.stdout
    full = {m["step"]: m for m in jsonl(d / "training.jsonl")}
    resumed = jsonl(tmp_path / "training.jsonl")
    assert [m["step"] for m in resumed] == list(range(30, 60))
    for m in resumed:  # exact equality of the printed doubles (they round-trip)
        assert (m["loss"], m["grad_norm"], m["lr"]) == (full[m["step"]]["loss"], full[m["step"]]["grad_norm"],
                                                        full[m["step"]]["lr"]), m["step"]


def test_auto_resume_from_latest_when_restore_from_is_unset(tmp_path):
    short = ["--step_scheduler.max_steps", 6, "--step_scheduler.ckpt_every_steps", 3,
             "--step_scheduler.val_every_steps", 100, "--lr_scheduler.lr_warmup_steps", 1]
    r = finetune(tmp_path, *short)
    assert r.returncode == 0, r.stderr
    r = finetune(tmp_path, *short)
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stdout and "epoch_0_step_5" in r.stdout
    assert "done: 0 steps" in r.stdout  # nothing left to do


def test_sigterm_during_training_leaves_a_complete_checkpoint(tmp_path):
    args = [str(BIN), "finetune", "llm", "-c", str(RECIPE), "--threads", "1", "--checkpoint.checkpoint_dir",
            str(tmp_path), "--step_scheduler.max_steps", "100000", "--step_scheduler.ckpt_every_steps", "100000",
            "--step_scheduler.val_every_steps", "100000"]
    p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "training.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, out + err
    assert "SIGTERM" in out
    names = checkpoints(tmp_path)
    assert len(names) == 1 and latest(tmp_path).endswith(names[0]), names
    step = int(names[0].rsplit("_", 1)[1])
    assert step == jsonl(log)[-1]["step"]  # the checkpoint is of the last step taken
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / names[0] / "model" / "consolidated")
    assert model.config.vocab_size == 512


def test_a_killed_save_leaves_the_previous_latest_intact(tmp_path):
    common = ["--step_scheduler.max_steps", 8, "--step_scheduler.ckpt_every_steps", 2,
              "--step_scheduler.val_every_steps", 100, "--lr_scheduler.lr_warmup_steps", 1]
    # the test hook SIGKILLs the process in the middle of its second save (after the model is written)
    r = finetune(tmp_path, *common, env={"AUTOMODEL_FAULT_INJECTION": "kill_during_checkpoint_save:2"})
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    assert checkpoints(tmp_path) == ["epoch_0_step_1"]
    assert latest(tmp_path).endswith("epoch_0_step_1")
    # the next run resumes from the complete checkpoint, never from the half-written one, and finishes
    r = finetune(tmp_path, *common)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming from" in r.stdout and "epoch_0_step_1" in r.stdout
    assert latest(tmp_path).endswith("epoch_0_step_7")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "the stale staging directory is removed"


def test_packed_training_gives_the_unpacked_loss(tmp_path):
    common = ["--dataset.limit_dataset_samples", 8, "--dataloader.shuffle", "false", "--step_scheduler.max_steps", 1,
              "--checkpoint.enabled", "false", "--step_scheduler.val_every_steps", 100, "--lr_scheduler", "none"]
    plain = finetune(tmp_path / "plain", *common, "--step_scheduler.global_batch_size", 8,
                     "--step_scheduler.local_batch_size", 8)
    packed = finetune(tmp_path / "packed", *common, "--step_scheduler.global_batch_size", 1,
                      "--step_scheduler.local_batch_size", 1, "--packed_sequence.packed_sequence_size", 1024)
    assert plain.returncode == 0 and packed.returncode == 0, plain.stderr + packed.stderr
    a = jsonl(tmp_path / "plain" / "training.jsonl")[0]
    b = jsonl(tmp_path / "packed" / "training.jsonl")[0]
    assert a["num_label_tokens"] == b["num_label_tokens"]
    assert abs(a["loss"] - b["loss"]) <= 1e-5 * a["loss"], (a, b)
    assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-4 * a["grad_norm"], (a, b)


def test_recipe_file_form_and_gradient_accumulation_matches_one_big_batch(tmp_path):
    """`automodel recipe.yaml`; 2 micro-batches of 4 give the loss and gradient norm of 1 batch of 8."""
    common = ["--dataset.limit_dataset_samples", 8, "--dataloader.shuffle", "false", "--step_scheduler.max_steps", 1,
              "--checkpoint.enabled", "false", "--step_scheduler.val_every_steps", 100, "--lr_scheduler", "none",
              *THREADS,
              "--step_scheduler.global_batch_size", 8]
    runs = {}
    for local in (8, 4):
        d = tmp_path / str(local)
        r = subprocess.run([str(BIN), str(RECIPE), "--checkpoint.checkpoint_dir", str(d),
                            "--step_scheduler.local_batch_size", str(local), *map(str, common)],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stdout + r.stderr
        runs[local] = jsonl(d / "training.jsonl")[0]
    assert abs(runs[8]["loss"] - runs[4]["loss"]) <= 1e-5 * runs[8]["loss"]
    assert abs(runs[8]["grad_norm"] - runs[4]["grad_norm"]) <= 1e-4 * runs[8]["grad_norm"]


def bad_recipe(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(RECIPE.read_text() + text)
    return p


@pytest.mark.parametrize("extra,overrides,expected", [
    ("", ["--optimizer._target_", "torch.optim.AdamX"],
     ["unknown _target_ 'torch.optim.AdamX'", "torch.optim.AdamW"]),
    ("", ["--optimizer.learning_rate", "0.1"], ["learning_rate", "lr"]),
    ("", ["--step_scheduler.max_steps", "many"], ["max_steps", "integer"]),
    ("", ["--model.pretrained_model_name_or_path", "/nonexistent/model"], ["/nonexistent/model"]),
    ("", ["--dataset.dataset_name", "/nonexistent/data"], ["/nonexistent/data"]),
    ("\nunknown_section:\n  a: 1\n", [], ["bad.yaml:", "unknown_section"]),
    ("", ["--distributed.tp_size", "2"], ["tp_size"]),
])
def test_bad_recipes_fail_with_a_clear_error(tmp_path, extra, overrides, expected):
    r = finetune(tmp_path / "ck", *overrides, recipe=bad_recipe(tmp_path, extra))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith("error: "), r.stderr
    for e in expected:
        assert e in r.stderr, r.stderr


def test_missing_required_section_and_missing_env_variable(tmp_path):
    text = RECIPE.read_text()
    no_model = tmp_path / "no_model.yaml"
    start = text.index("\nmodel:")
    no_model.write_text(text[:start] + text[text.index("\n\n", start + 1):])
    r = subprocess.run([str(BIN), "finetune", "llm", "-c", str(no_model)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and "'model'" in r.stderr, r.stderr
    env_recipe = tmp_path / "env.yaml"
    env_recipe.write_text(text.replace("checkpoint_dir: checkpoints/tiny_llama_squad",
                                       "checkpoint_dir: ${AUTOMODEL_TEST_UNSET_VARIABLE}"))
    r = subprocess.run([str(BIN), "finetune", "llm", "-c", str(env_recipe)], capture_output=True, text=True, cwd=ROOT,
                       env={k: v for k, v in os.environ.items() if k != "AUTOMODEL_TEST_UNSET_VARIABLE"})
    assert r.returncode == 1 and "AUTOMODEL_TEST_UNSET_VARIABLE" in r.stderr, r.stderr


def test_activation_checkpointing_gives_the_same_losses(tmp_path):
    common = ["--step_scheduler.max_steps", 3, "--checkpoint.enabled", "false", "--step_scheduler.val_every_steps", 100,
              "--lr_scheduler.lr_warmup_steps", 1, "--dataset.limit_dataset_samples", 64]
    plain = finetune(tmp_path / "plain", *common)
    ckpt = finetune(tmp_path / "ckpt", *common, "--distributed.activation_checkpointing", "true")
    assert plain.returncode == 0 and ckpt.returncode == 0, plain.stderr + ckpt.stderr
    a, b = jsonl(tmp_path / "plain" / "training.jsonl"), jsonl(tmp_path / "ckpt" / "training.jsonl")
    assert [(m["loss"], m["grad_norm"]) for m in a] == [(m["loss"], m["grad_norm"]) for m in b]


def test_fused_and_eager_kernels_give_the_same_losses(tmp_path):
    """use_liger_kernel / attn_implementation pick ours fused (flash attention, fused linear cross-entropy) or
    transformers' eager composition (materialised attention, cross-entropy over the logits): one override, and in
    fp32 the two follow the same loss curve to rounding."""
    common = ["--step_scheduler.max_steps", 20, "--checkpoint.enabled", "false", "--step_scheduler.val_every_steps", 10]
    fused = finetune(tmp_path / "fused", *common)
    eager = finetune(tmp_path / "eager", *common, "--model.use_liger_kernel", "false", "--model.attn_implementation",
                     "eager")
    assert fused.returncode == 0 and eager.returncode == 0, fused.stderr + eager.stderr
    for log in ("training.jsonl", "validation.jsonl"):
        a, b = jsonl(tmp_path / "fused" / log), jsonl(tmp_path / "eager" / log)
        key = "loss" if log == "training.jsonl" else "val_loss"
        assert len(a) == len(b) > 0
        assert max(abs(x[key] - y[key]) / x[key] for x, y in zip(a, b)) <= 1e-4, (log, a, b)


def test_bf16_mixed_precision_follows_the_fp32_loss_curve(tmp_path):
    """model.torch_dtype bfloat16: bf16 weights and activations, fp32 master weights and optimizer state."""
    common = ["--step_scheduler.max_steps", 40, "--checkpoint.enabled", "false", "--step_scheduler.val_every_steps", 20]
    runs = {}
    for dtype in ("float32", "bfloat16"):
        r = finetune(tmp_path / dtype, *common, "--model.torch_dtype", dtype)
        assert r.returncode == 0, r.stdout + r.stderr
        runs[dtype] = (jsonl(tmp_path / dtype / "training.jsonl"), jsonl(tmp_path / dtype / "validation.jsonl"))
    (t32, v32), (t16, v16) = runs["float32"], runs["bfloat16"]
    assert max(abs(a["loss"] - b["loss"]) / a["loss"] for a, b in zip(t32, t16)) <= 0.02
    assert [m["step"] for m in v16] == [19, 39]
    for a, b in zip(v32, v16):
        assert abs(a["val_loss"] - b["val_loss"]) <= 0.01 * a["val_loss"], (a, b)
    assert v16[-1]["val_loss"] < 0.8 * v16[0]["val_loss"]


def squad_records(n):
    return [json.loads(line) for line in (ROOT / "assets" / "tiny-squad" / "train.jsonl").read_text().splitlines()[:n]]


@pytest.mark.parametrize("kind", ["chat", "sharegpt", "column_mapped"])
def test_other_dataset_kinds_train(tmp_path, kind):
    """ChatDataset (OpenAI messages, ShareGPT conversations; loss on assistant turns, rendered with the model's
    chat template) and ColumnMappedTextInstructionDataset through the recipe."""
    data = tmp_path / "data.jsonl"
    with open(data, "w") as f:
        for r in squad_records(64):
            q, a = f"Context: {r['context']} Question: {r['question']}", r["answers"]["text"][0]
            if kind == "chat":
                rec = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            elif kind == "sharegpt":
                rec = {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
            else:
                rec = {"ctx": r["context"], "q": r["question"], "ans": a}
            f.write(json.dumps(rec) + "\n")
    if kind == "column_mapped":
        dataset = ["--dataset._target_",
                   "nemo_automodel.components.datasets.llm.column_mapped_text_instruction_dataset."
                   "ColumnMappedTextInstructionDataset", "--dataset.path_or_dataset_id", data,
                   "--dataset.column_mapping.context", "ctx", "--dataset.column_mapping.question", "q",
                   "--dataset.column_mapping.answer", "ans"]
    else:
        dataset = ["--dataset._target_", "nemo_automodel.components.datasets.llm.chat_dataset.ChatDataset",
                   "--dataset.path_or_dataset_id", data]
    r = finetune(tmp_path / "ck", *dataset, "--validation_dataset", "none", "--step_scheduler.max_steps", 16,
                 "--checkpoint.enabled", "false", "--lr_scheduler.lr_warmup_steps", 2)
    assert r.returncode == 0, r.stdout + r.stderr
    train = jsonl(tmp_path / "ck" / "training.jsonl")
    assert len(train) == 16 and all(0 < m["num_label_tokens"] for m in train)
    assert sum(m["loss"] for m in train[-4:]) < 0.8 * sum(m["loss"] for m in train[:4])
