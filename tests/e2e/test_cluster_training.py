"""Data-parallel fine-tuning (ddp, and fsdp2 across the namespaces) launched the ways a cluster launches it: by a real Slurm through the reference sbatch
script (srun --mpi=pmix), preempted with SIGTERM and requeued; and by mpirun across two network namespaces talking
TCP only (two "nodes" sharing no memory). Each trains as one process with the global batch."""
import json
import os
import pathlib
import subprocess
import time

import pytest

from cluster import mpi_env, netns_pair, slurm_cluster  # noqa: F401 (fixtures)

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")).resolve() / "automodel"
RECIPE = ROOT / "examples" / "llm_finetune" / "tiny_llama_squad.yaml"
EXAMPLE_SBATCH = ROOT / "examples" / "slurm" / "automodel.sbatch"
STEPS = 8
TRAIN = ["--step_scheduler.max_steps", STEPS, "--step_scheduler.global_batch_size", 16,
         "--step_scheduler.ckpt_every_steps", 100, "--step_scheduler.val_every_steps", 100,
         "--lr_scheduler.lr_warmup_steps", 2]
DDP = ["--distributed.strategy", "ddp", "--step_scheduler.local_batch_size", 4]


def jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def args(*items):
    return [str(a) for a in items]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("single")
    r = subprocess.run([str(BIN), "finetune", "llm", "-c", str(RECIPE), "--threads", "1", *args(*TRAIN),
                        "--step_scheduler.local_batch_size", "8", "--checkpoint.checkpoint_dir", str(d)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    return jsonl(d / "training.jsonl")


def assert_matches(single, ckpt_dir):
    got = jsonl(pathlib.Path(ckpt_dir) / "training.jsonl")
    assert [r["step"] for r in got] == list(range(STEPS))
    for x, y in zip(single, got):
        assert x["num_label_tokens"] == y["num_label_tokens"]
        assert abs(x["loss"] - y["loss"]) <= 1e-5 * abs(x["loss"]), (x, y)
        assert abs(x["grad_norm"] - y["grad_norm"]) <= 1e-5 * x["grad_norm"], (x, y)


def submit_example(cluster, job_dir, *overrides):
    """The reference sbatch script as a user submits it, its sizes fitted to this node: 2 tasks of 1 core."""
    env = dict(cluster.env, AUTOMODEL=str(BIN), RECIPE=str(RECIPE))
    r = subprocess.run(["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=10",
                        f"--chdir={ROOT}", f"--output={job_dir}/out", str(EXAMPLE_SBATCH), *args(*overrides)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip().split(";")[0])


def test_the_sbatch_script_trains_two_ranks_through_srun(slurm_cluster, tmp_path, single_run):
    job = submit_example(slurm_cluster, tmp_path, *TRAIN, *DDP, "--checkpoint.checkpoint_dir", tmp_path / "ck")
    record = slurm_cluster.wait_for_end(job, timeout=300)
    out = (tmp_path / "out").read_text()
    assert record["JobState"] == "COMPLETED", f"{record}\n{out}"
    assert "data parallel (ddp): 2 ranks" in out and "automodel exited 0" in out, out
    assert_matches(single_run, tmp_path / "ck")


def test_a_preempted_job_checkpoints_and_its_requeued_run_resumes(slurm_cluster, tmp_path):
    ck = tmp_path / "ck"
    steps = 300
    job = submit_example(slurm_cluster, tmp_path, "--step_scheduler.max_steps", steps,
                         "--step_scheduler.ckpt_every_steps", 1000, "--step_scheduler.val_every_steps", 1000, *DDP,
                         "--checkpoint.checkpoint_dir", ck)
    deadline = time.monotonic() + 120
    while not (ck / "training.jsonl").exists() or len(jsonl(ck / "training.jsonl")) < 3:
        assert time.monotonic() < deadline, f"{slurm_cluster.job(job)}\n{(tmp_path / 'out').read_text()}"
        time.sleep(0.1)
    # Preemption: SIGTERM to every rank (what --signal=TERM@120 and a preempting GraceTime send).
    slurm_cluster.scancel(job, "--signal=TERM")
    record = slurm_cluster.wait_for_end(job, timeout=120)
    out = (tmp_path / "out").read_text()
    assert record["JobState"] == "COMPLETED" and "stopped on SIGTERM" in out, f"{record}\n{out}"
    stopped_at = jsonl(ck / "training.jsonl")[-1]["step"]
    assert stopped_at < steps - 1, "SIGTERM came after training ended"
    latest = ck / "LATEST"
    name = os.readlink(latest) if latest.is_symlink() else latest.read_text().strip()
    assert name.endswith(f"_step_{stopped_at}"), name
    slurm_cluster.requeue(job)
    deadline = time.monotonic() + 120
    while "run 1" not in (tmp_path / "out").read_text() or slurm_cluster.job(job)["JobState"] != "COMPLETED":
        assert time.monotonic() < deadline, f"{slurm_cluster.job(job)}\n{(tmp_path / 'out').read_text()}"
        time.sleep(0.2)
    out = (tmp_path / "out").read_text()
    assert f"resuming from {ck / name}" in out and "automodel exited 0" in out.split("run 1")[-1], out
    # Every step once, in order: the requeued run went on after the checkpointed step.
    assert [r["step"] for r in jsonl(ck / "training.jsonl")] == list(range(steps))


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_ranks_in_two_network_namespaces_over_tcp(netns_pair, tmp_path, single_run, strategy):
    ck = tmp_path / "ck"
    r = netns_pair.mpirun(str(BIN), "finetune", "llm", "-c", str(RECIPE), "--threads", "1", *args(*TRAIN, *DDP),
                          "--distributed.strategy", strategy, "--checkpoint.checkpoint_dir", str(ck),
                          mpirun_options=("--wdir", str(ROOT)), timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert f"data parallel ({strategy}): 2 ranks" in r.stdout
    assert_matches(single_run, ck)
