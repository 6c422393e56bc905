"""Data-parallel training (distributed.strategy: ddp and fsdp2) on MPI ranks started as a user starts them:
`--nproc-per-node N` and `mpirun -np N`. Two ranks with local batch 4 train exactly as one process with local batch 8
(the same global batches); checkpoints resume across world sizes and strategies; fsdp2 holds 1/N of the parameters,
gradients and optimizer state per rank; a dead, hung or mismatched rank ends the job with an error."""
import json
import os
import pathlib
import signal
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"
RECIPE = ROOT / "examples" / "llm_finetune" / "tiny_llama_squad.yaml"
PEFT_RECIPE = ROOT / "examples" / "llm_finetune" / "tiny_llama_squad_peft.yaml"
# OpenMPI refuses to start ranks as root unless told (CI runs as root); only these tests' processes are told.
MPI_ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
STEPS = 10
# Ten steps of two micro-batches each (gradient accumulation), checkpoints after steps 4 and 9; 1 thread per rank.
COMMON = ["--threads", 1, "--step_scheduler.max_steps", STEPS, "--step_scheduler.global_batch_size", 16,
          "--step_scheduler.ckpt_every_steps", 5, "--step_scheduler.val_every_steps", 5,
          "--lr_scheduler.lr_warmup_steps", 2]


def finetune(ckpt_dir, *overrides, ranks=1, strategy="ddp", recipe=RECIPE, launch="nproc", timeout=600):
    """One run: a single process (ranks=1), or `ranks` ranks of `strategy` with local batch 8 / ranks."""
    args = ["finetune", "llm", "-c", str(recipe), *map(str, COMMON), "--checkpoint.checkpoint_dir", str(ckpt_dir)]
    if ranks > 1:
        args += ["--distributed.strategy", strategy, "--step_scheduler.local_batch_size", str(8 // ranks)]
    else:
        args += ["--step_scheduler.local_batch_size", "8"]
    args += list(map(str, overrides))
    if ranks == 1:
        cmd = [str(BIN), *args]
    elif launch == "nproc":
        cmd = [str(BIN), *args, "--nproc-per-node", str(ranks)]
    else:
        cmd = ["mpirun", "-np", str(ranks), "--oversubscribe", "--bind-to", "none", str(BIN), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=MPI_ENV)


def jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def assert_same_training(single, ddp, tol):
    a, b = jsonl(single / "training.jsonl"), jsonl(ddp / "training.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(STEPS))
    for x, y in zip(a, b):
        assert x["num_label_tokens"] == y["num_label_tokens"] and x["num_tokens_per_step"] == y["num_tokens_per_step"]
        assert rel(x["loss"], y["loss"]) <= tol, (x, y)
        assert rel(x["grad_norm"], y["grad_norm"]) <= tol, (x, y)
    va, vb = jsonl(single / "validation.jsonl"), jsonl(ddp / "validation.jsonl")
    assert len(va) == len(vb) == 2
    for x, y in zip(va, vb):
        assert x["num_label_tokens"] == y["num_label_tokens"] and rel(x["val_loss"], y["val_loss"]) <= tol


def assert_same_weights(file_a, file_b, tol):
    from safetensors.torch import load_file
    ta, tb = load_file(str(file_a)), load_file(str(file_b))
    assert ta.keys() == tb.keys()
    for k in ta:
        a, b = ta[k].double(), tb[k].double()
        assert float((a - b).abs().max()) <= tol * max(1.0, float(a.abs().max())), k


def final(ckpt_dir):
    return pathlib.Path(ckpt_dir) / f"epoch_0_step_{STEPS - 1}"


CASES = {
    # name: (recipe, overrides, tolerance: fp32 1e-5; bf16 the bf16 tolerance of the single-process tests)
    "fp32": (RECIPE, [], 1e-5),
    "no_grad_accumulation": (RECIPE, ["--step_scheduler.global_batch_size", 8], 1e-5),
    "packing": (RECIPE, ["--packed_sequence.packed_sequence_size", 256], 1e-5),
    "lora": (PEFT_RECIPE, [], 1e-5),
    "bf16": (RECIPE, ["--model.torch_dtype", "bfloat16"], 2e-2),
    "activation_checkpointing": (RECIPE, ["--distributed.activation_checkpointing", "true"], 1e-5),
    # fsdp2 cuts each parameter's 8-bit state at whole quantization blocks: the blocks of one process. Losses and
    # norms agree to 1e-5; a weight moves by up to ~lr/4 more or less where the two summation orders of a gradient
    # round a moment to neighbouring 8-bit codes (ddp and fsdp2 alike: measured 2.6e-4)
    "adamw8bit": (RECIPE, ["--optimizer._target_", "torchao.optim.AdamW8bit"], 1e-5, 1e-3),
}


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """The default recipe in one process, local batch 8: what the two-rank runs must reproduce."""
    d = tmp_path_factory.mktemp("single")
    r = finetune(d)
    assert r.returncode == 0, r.stdout + r.stderr
    return d


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_train_as_one_process_with_the_global_batch(tmp_path, case, strategy, single_run):
    recipe, overrides, tol, *weights_tol = CASES[case]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    if case == "fp32":
        single = single_run
    else:
        r1 = finetune(single, *overrides, recipe=recipe)
        assert r1.returncode == 0, r1.stdout + r1.stderr
    r2 = finetune(ddp, *overrides, recipe=recipe, ranks=2, strategy=strategy)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert f"data parallel ({strategy}): 2 ranks" in r2.stdout
    assert_same_training(single, ddp, tol)
    assert all(x["grad_sync_wait_s"] >= 0 for x in jsonl(ddp / "training.jsonl"))  # the unhidden communication
    if recipe == PEFT_RECIPE:
        name = "model/adapter_model.safetensors"
    else:
        name = "model/consolidated/model.safetensors"
    assert_same_weights(final(single) / name, final(ddp) / name, weights_tol[0] if weights_tol else tol)


def test_mpirun_is_the_same_job_as_nproc_per_node(tmp_path):
    a = finetune(tmp_path / "nproc", ranks=2)
    b = finetune(tmp_path / "mpirun", ranks=2, launch="mpirun")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    timing = ("tps", "tps_per_gpu", "mem", "timestamp", "grad_sync_wait_s")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]
    assert strip(jsonl(tmp_path / "nproc" / "training.jsonl")) == strip(jsonl(tmp_path / "mpirun" / "training.jsonl"))


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_a_rank_with_an_empty_slice_of_a_short_last_batch(tmp_path, strategy):
    # 20 samples in global batches of 8: the last holds 4, all on rank 0; rank 1 still joins the reduction (and
    # under fsdp2 every gather). Validation: 10 samples, the second batch of 2 all on rank 0.
    over = ["--dataset.limit_dataset_samples", 20, "--validation_dataset.limit_dataset_samples", 10,
            "--step_scheduler.global_batch_size", 8, "--step_scheduler.max_steps", 3,
            "--step_scheduler.ckpt_every_steps", 100, "--dataloader.shuffle", "false"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    r1 = finetune(single, *over)
    r2 = finetune(ddp, *over, ranks=2, strategy=strategy)
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stdout + r2.stderr
    a, b = jsonl(single / "training.jsonl"), jsonl(ddp / "training.jsonl")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert x["num_label_tokens"] == y["num_label_tokens"] and rel(x["loss"], y["loss"]) <= 1e-5, (x, y)


@pytest.mark.parametrize("save,resume", [("ddp:2", "1"), ("1", "ddp:2"), ("ddp:2", "ddp:2"), ("fsdp2:2", "1"),
                                         ("1", "fsdp2:2"), ("fsdp2:2", "fsdp2:2"), ("fsdp2:2", "ddp:2"),
                                         ("ddp:2", "fsdp2:2")])
def test_resume_across_world_sizes(tmp_path, single_run, save, resume):
    """The checkpoint after step 4 of a run on `save` (strategy:ranks, or 1 process), resumed on `resume`: steps 5-9
    and the weights after them are those of the single process that never stopped."""
    def where(spec):
        strategy, _, ranks = spec.rpartition(":")
        return {"ranks": int(ranks), "strategy": strategy or "ddp"}

    saved = single_run
    if save != "1":
        saved = tmp_path / "saved"
        r = finetune(saved, **where(save))
        assert r.returncode == 0, r.stdout + r.stderr
        if save.startswith("fsdp2"):  # each rank wrote its shard of the optimizer state and of the weights
            assert sorted(p.name for p in (saved / "epoch_0_step_4" / "optim").iterdir()) == ["rank_0", "rank_1"]
            assert sorted(p.name for p in (saved / "epoch_0_step_4" / "model" / "sharded").iterdir()) == [
                "index.json", "rank_0.safetensors", "rank_1.safetensors"]
    d = tmp_path / "resumed"
    r = finetune(d, "--checkpoint.restore_from", saved / "epoch_0_step_4", **where(resume))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resuming from {saved / 'epoch_0_step_4'}" in r.stdout
    a, b = jsonl(single_run / "training.jsonl")[5:], jsonl(d / "training.jsonl")
    assert [x["step"] for x in b] == list(range(5, STEPS))
    for x, y in zip(a, b):
        assert rel(x["loss"], y["loss"]) <= 1e-6 and rel(x["grad_norm"], y["grad_norm"]) <= 1e-6, (x, y)
    name = "model/consolidated/model.safetensors"
    assert_same_weights(final(single_run) / name, final(d) / name, 1e-5)


def test_adamw8bit_state_of_fsdp2_ranks_resumes_in_any_world_size(tmp_path):
    """The 8-bit moments (codes and block scales) each fsdp2 rank saves are its blocks of every parameter's: one
    process and 4 ranks resume from 2 ranks' checkpoint as the uninterrupted single process continues (to 1e-5, not
    1e-6: the 2 ranks' moments already differ from the single process's by 8-bit codes that their summation orders
    round apart; measured 4e-6)."""
    adam8 = ["--optimizer._target_", "torchao.optim.AdamW8bit"]
    single, saved = tmp_path / "single", tmp_path / "saved"
    for d, ranks in ((single, 1), (saved, 2)):
        r = finetune(d, *adam8, ranks=ranks, strategy="fsdp2")
        assert r.returncode == 0, r.stdout + r.stderr
    state = json.loads((saved / "epoch_0_step_4" / "optim" / "rank_1" / "optimizer.json").read_text())
    assert any(k.endswith(".codes") for k in state["extra"]["shard"]["ranges"]), state["extra"]["shard"]
    for ranks in (1, 4):
        d = tmp_path / f"resumed{ranks}"
        r = finetune(d, *adam8, "--checkpoint.restore_from", saved / "epoch_0_step_4", ranks=ranks, strategy="fsdp2")
        assert r.returncode == 0, r.stdout + r.stderr
        for x, y in zip(jsonl(single / "training.jsonl")[5:], jsonl(d / "training.jsonl"), strict=True):
            assert rel(x["loss"], y["loss"]) <= 1e-5 and rel(x["grad_norm"], y["grad_norm"]) <= 1e-5, (ranks, x, y)


@pytest.mark.parametrize("ranks", [2, 4])
def test_fsdp2_resumes_from_the_weight_shards_of_each_rank(tmp_path, single_run, ranks):
    """fsdp2 ranks read their shards of the weights from model/sharded/ (every rank's stretch of each parameter, and
    the index naming them), not from the consolidated model: with the consolidated weights gone, 2 ranks and 4
    (another cut of every buffer) continue as the single process."""
    saved = tmp_path / "saved"
    r = finetune(saved, ranks=2, strategy="fsdp2")
    assert r.returncode == 0, r.stdout + r.stderr
    ckpt = saved / "epoch_0_step_4"
    index = json.loads((ckpt / "model" / "sharded" / "index.json").read_text())
    assert index["world_size"] == 2
    embed = index["parameters"]["model.embed_tokens.weight"]
    assert sum(p["numel"] for p in embed["parts"]) == embed["shape"][0] * embed["shape"][1]
    (ckpt / "model" / "consolidated" / "model.safetensors").unlink()
    d = tmp_path / "resumed"
    r = finetune(d, "--checkpoint.restore_from", ckpt, ranks=ranks, strategy="fsdp2")
    assert r.returncode == 0, r.stdout + r.stderr
    for x, y in zip(jsonl(single_run / "training.jsonl")[5:], jsonl(d / "training.jsonl"), strict=True):
        assert rel(x["loss"], y["loss"]) <= 1e-6 and rel(x["grad_norm"], y["grad_norm"]) <= 1e-6, (x, y)
    # One process has no shards to read: the consolidated weights it needs are named as missing.
    r = finetune(tmp_path / "single", "--checkpoint.restore_from", ckpt)
    assert r.returncode != 0 and "model.safetensors" in r.stderr, r.stderr


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_the_consolidated_checkpoint_of_two_ranks_loads_in_transformers(tmp_path, strategy):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    r = finetune(tmp_path, ranks=2, strategy=strategy)
    assert r.returncode == 0, r.stderr
    model_dir = final(tmp_path) / "model" / "consolidated"
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = [0, 5, 17, 42, 99, 7, 3]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].double(), -1)
    expected = [float(logp[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    out = subprocess.run([str(BIN), "logprobs", "--model", str(model_dir), "--prompt-ids", ",".join(map(str, ids))],
                         capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    got = got["logprobs"] if isinstance(got, dict) else got
    assert max(abs(a - b) for a, b in zip(got, expected)) <= 1e-4, (got, expected)


def start_long_job(ckpt_dir, *overrides):
    args = [str(BIN), "finetune", "llm", "-c", str(RECIPE), "--threads", "1", "--distributed.strategy", "ddp",
            "--step_scheduler.local_batch_size", "4", "--step_scheduler.max_steps", "100000",
            "--checkpoint.checkpoint_dir", str(ckpt_dir), *map(str, overrides), "--nproc-per-node", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=MPI_ENV)
    deadline = time.time() + 120
    while not (pathlib.Path(ckpt_dir) / "training.jsonl").exists() or not jsonl(ckpt_dir / "training.jsonl"):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    return proc


def rank_pids(ckpt_dir):
    out = subprocess.run(["pgrep", "-f", f"automodel finetune .*{ckpt_dir}"], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    return [p for p in pids if not open(f"/proc/{p}/cmdline").read().startswith("mpirun")]


def test_a_killed_rank_ends_the_job(tmp_path):
    proc = start_long_job(tmp_path)
    ranks = rank_pids(tmp_path)
    assert len(ranks) == 2, ranks
    os.kill(max(ranks), signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "rank 1" in out + err and "signal 9" in out + err, out[-2000:] + err


def test_a_hung_rank_ends_the_job_after_the_timeout(tmp_path):
    proc = start_long_job(tmp_path, "--dist_env.timeout_minutes", 0.05)
    ranks = rank_pids(tmp_path)
    os.kill(max(ranks), signal.SIGSTOP)
    start = time.time()
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        for p in ranks:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert proc.returncode != 0 and time.time() - start < 30
    assert "waited more than 3 s (dist_env.timeout_minutes) in an all-reduce" in err, err


def test_sigterm_to_the_launcher_checkpoints_every_rank_at_the_same_step(tmp_path):
    proc = start_long_job(tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert "stopped on SIGTERM" in out, out[-2000:] + err
    latest = (tmp_path / "LATEST")
    name = os.readlink(latest) if latest.is_symlink() else latest.read_text().strip()
    step = int(name.rsplit("_", 1)[1])
    assert jsonl(tmp_path / "training.jsonl")[-1]["step"] == step
    # The checkpoint is complete: a run resumes from it.
    r = finetune(tmp_path, "--step_scheduler.max_steps", step + 2, "--step_scheduler.global_batch_size", 8, ranks=2)
    assert r.returncode == 0 and f"resuming from {tmp_path / name}" in r.stdout, r.stdout + r.stderr


def test_ranks_with_different_recipes_are_an_error(tmp_path):
    base = [str(BIN), "finetune", "llm", "-c", str(RECIPE), "--threads", "1", "--distributed.strategy", "ddp",
            "--step_scheduler.local_batch_size", "4", "--checkpoint.checkpoint_dir", str(tmp_path)]
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "1", *base, ":", "-np", "1", *base,
           "--optimizer.lr", "1e-4"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=MPI_ENV)
    assert r.returncode != 0
    assert "rank 1 runs a different recipe than rank 0" in r.stderr, r.stderr


@pytest.mark.parametrize("overrides,message", [
    (["--distributed.dp_size", 4], "distributed.dp_size = 4 but the job has 2 rank(s)"),
    (["--distributed.tp_size", 2], "distributed.tp_size = 2: only data parallelism is built"),
    (["--distributed.dp_replicate_size", 3], "distributed.dp_replicate_size = 3 does not divide the 2"),
    (["--step_scheduler.global_batch_size", 12],
     "global_batch_size (12) must be divisible by local_batch_size * dp_size"),
    (["--dist_env.timeout_minutes", 0], "dist_env.timeout_minutes must be a positive number, got 0"),
    (["--distributed.bucket_cap_mb", -1], "distributed.bucket_cap_mb must be a positive number of MB, got -1"),
])
def test_bad_distributed_settings_are_errors(tmp_path, overrides, message):
    r = finetune(tmp_path, *overrides, ranks=2, timeout=120)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert "Segmentation" not in r.stderr and "Traceback" not in r.stderr


def test_nproc_per_node_inside_mpirun_and_bad_counts_are_errors(tmp_path):
    r = finetune(tmp_path, "--nproc-per-node", 2, ranks=2, launch="mpirun", timeout=120)
    assert r.returncode != 0 and "--nproc-per-node inside an MPI job" in r.stderr, r.stderr
    r = subprocess.run([str(BIN), "finetune", "llm", "-c", str(RECIPE), "--nproc-per-node", "0"], capture_output=True,
                       text=True, cwd=ROOT, env=MPI_ENV)
    assert r.returncode != 0 and "--nproc-per-node needs a number of ranks from 1 to 4096, got '0'" in r.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMPI_ALLOW_RUN_AS_ROOT")}
    if os.geteuid() == 0:
        r = subprocess.run([str(BIN), "finetune", "llm", "-c", str(RECIPE), "--nproc-per-node", "2"],
                           capture_output=True, text=True, cwd=ROOT, env=env)
        assert r.returncode != 0 and "mpirun refuses to start ranks as root" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def wider_llama(tmp_path_factory):
    """A Llama whose weights, not its activations, fill memory (3M parameters, short samples), written by
    transformers, with the tiny Llama's tokenizer."""
    import shutil
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("wider_llama")
    config = transformers.LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=512,
                                      max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=0,
                                      eos_token_id=1, pad_token_id=2)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(d)
    tiny = ROOT / "assets" / "tiny-llama"
    for f in tiny.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "chat_template.jinja"):
            shutil.copy(f, d / f.name)
    return d


def test_fsdp2_holds_a_1_over_n_share_of_the_training_state(tmp_path, wider_llama):
    """Allocator bytes per rank (rank 0's training.jsonl) with local batch 1 on 1, 2 and 4 ranks. mem_held, what stays
    between steps (parameters, gradients and AdamW state: 16 bytes a parameter, 48 MB here), is split N ways; the peak
    (mem) adds what a step needs for a while: the running layers' full parameters and gradients, the embeddings, the
    activations."""
    over = ["--model.pretrained_model_name_or_path", wider_llama, "--dataset.seq_length", 64,
            "--step_scheduler.max_steps", 3, "--step_scheduler.ckpt_every_steps", 100,
            "--step_scheduler.val_every_steps", 100, "--checkpoint.enabled", "false",
            "--lr_scheduler.lr_warmup_steps", 0, "--step_scheduler.local_batch_size", 1]
    held, peak = {}, {}
    for n in (1, 2, 4):
        d = tmp_path / f"n{n}"
        args = [str(BIN), "finetune", "llm", "-c", str(RECIPE), "--checkpoint.checkpoint_dir", str(d),
                *map(str, COMMON), *map(str, over), "--step_scheduler.global_batch_size", str(n)]
        if n > 1:
            args += ["--distributed.strategy", "fsdp2", "--nproc-per-node", str(n)]
        r = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT, env=MPI_ENV)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr
        rows = jsonl(d / "training.jsonl")
        held[n] = rows[-1]["mem_held"] * 2**30
        peak[n] = max(x["mem"] for x in rows) * 2**30
    mb = lambda d: {n: f"{b / 1e6:.1f} MB" for n, b in d.items()}
    print("held", mb(held), "peak", mb(peak))
    assert held[1] >= 48e6, held
    assert held[2] <= 0.55 * held[1] and held[4] <= 0.3 * held[1], held
    assert peak[4] < peak[2] < peak[1], peak


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_a_wider_llama_trains_on_two_ranks_as_in_one_process(tmp_path, wider_llama, strategy):
    over = ["--model.pretrained_model_name_or_path", wider_llama, "--dataset.seq_length", 64,
            "--step_scheduler.val_every_steps", 100]
    single, two = tmp_path / "single", tmp_path / "two"
    r1 = finetune(single, *over)
    r2 = finetune(two, *over, ranks=2, strategy=strategy)
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stdout[-2000:] + r2.stderr
    a, b = jsonl(single / "training.jsonl"), jsonl(two / "training.jsonl")
    assert len(a) == len(b) == STEPS
    for x, y in zip(a, b):
        assert rel(x["loss"], y["loss"]) <= 1e-5 and rel(x["grad_norm"], y["grad_norm"]) <= 1e-5, (x, y)
    name = "model/consolidated/model.safetensors"
    assert_same_weights(final(single) / name, final(two) / name, 1e-5)


def test_hsdp_two_replicas_of_two_shards_train_as_one_process(tmp_path, single_run):
    """fsdp2 with dp_replicate_size 2 on 4 ranks (oversubscribed): two groups each shard the model across 2 ranks;
    the checkpoint (written by the first group) resumes in one process."""
    d = tmp_path / "hsdp"
    r = finetune(d, "--distributed.dp_replicate_size", 2, ranks=4, strategy="fsdp2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert_same_training(single_run, d, 1e-5)
    name = "model/consolidated/model.safetensors"
    assert_same_weights(final(single_run) / name, final(d) / name, 1e-5)
    assert sorted(p.name for p in (d / "epoch_0_step_4" / "optim").iterdir()) == ["rank_0", "rank_1"]
    resumed = tmp_path / "resumed"
    r = finetune(resumed, "--checkpoint.restore_from", d / "epoch_0_step_4")
    assert r.returncode == 0, r.stdout + r.stderr
    for x, y in zip(jsonl(single_run / "training.jsonl")[5:], jsonl(resumed / "training.jsonl")):
        assert rel(x["loss"], y["loss"]) <= 1e-6 and rel(x["grad_norm"], y["grad_norm"]) <= 1e-6, (x, y)
