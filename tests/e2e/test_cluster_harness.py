"""The cluster harness (cluster.py) proven with a small MPI program (cluster_probe.c): srun --mpi=pmix inside a batch
job on a real one-node Slurm, SIGTERM delivered by scancel, requeue, and mpirun across two network namespaces."""
import os
import pathlib
import re
import subprocess
import tempfile
import time

import pytest

from cluster import netns_pair, slurm_cluster  # noqa: F401 (fixtures)
from cluster import mpi_env, network_namespace_pair, processes_of, start_slurm_cluster

HERE = pathlib.Path(__file__).resolve().parent
EXAMPLE_SBATCH = HERE.parents[1] / "examples" / "slurm" / "automodel.sbatch"
RANK_LINE = re.compile(r"^rank (\d+) size (\d+) host (\S+) netns (\S+)$", re.M)
SUM_LINE = re.compile(r"^rank (\d+) sum (\d+) bulk (\w+)$", re.M)


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    binary = tmp_path_factory.mktemp("probe") / "cluster_probe"
    source = HERE / "cluster_probe.c"
    r = subprocess.run(["mpicc", "-O1", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(source)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return binary


@pytest.fixture
def job_dir():
    # Outside pytest's basetemp, which may sit under a directory only root can enter: the job runs as root too, but
    # a short, plain path keeps the batch scripts readable in a failure message.
    with tempfile.TemporaryDirectory(prefix="am-job-") as d:
        yield pathlib.Path(d)


def write_script(path, body):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def assert_two_ranks_summed(output):
    ranks = RANK_LINE.findall(output)
    assert sorted((int(r), int(s)) for r, s, _, _ in ranks) == [(0, 2), (1, 2)], output
    # Ranks 1 and 2 contribute rank + 1: 1 + 2.
    assert sorted(SUM_LINE.findall(output)) == [("0", "3", "ok"), ("1", "3", "ok")], output
    return ranks


def test_srun_pmix_in_a_batch_job_gives_two_ranks_and_their_sum(slurm_cluster, probe, job_dir):
    script = write_script(job_dir / "job.sh", f"srun --mpi=pmix -n 2 {probe}\n")
    job = slurm_cluster.sbatch(script, "-n", "2", f"--output={job_dir}/out")
    record = slurm_cluster.wait_for_end(job)
    output = (job_dir / "out").read_text()
    assert record["JobState"] == "COMPLETED", f"{record}\n{output}"
    assert_two_ranks_summed(output)


def test_scancel_signal_term_reaches_the_tasks_which_exit_cleanly(slurm_cluster, probe, job_dir):
    script = write_script(job_dir / "job.sh",
                          f"srun --mpi=pmix -n 2 {probe} --wait-for-term {job_dir}\necho \"srun exit $?\"\n")
    job = slurm_cluster.sbatch(script, "-n", "2", f"--output={job_dir}/out")
    deadline = time.monotonic() + 30
    while not all((job_dir / f"ready.{rank}").exists() for rank in (0, 1)):
        assert time.monotonic() < deadline, f"ranks not ready: {slurm_cluster.job(job)}"
        time.sleep(0.1)
    slurm_cluster.scancel(job, "--signal=TERM")
    record = slurm_cluster.wait_for_end(job)
    output = (job_dir / "out").read_text()
    assert record["JobState"] == "COMPLETED", f"{record}\n{output}"
    for rank in (0, 1):
        assert (job_dir / f"sigterm.{rank}").read_text() == f"rank {rank} got SIGTERM\n"
    assert "srun exit 0" in output


def test_requeue_runs_the_batch_script_again(slurm_cluster, job_dir):
    runs = job_dir / "runs"
    script = write_script(job_dir / "job.sh", f"echo \"run $SLURM_RESTART_COUNT\" >> {runs}\n")
    job = slurm_cluster.sbatch(script, "--requeue", "-n", "1", "--output=/dev/null")
    assert slurm_cluster.wait_for_end(job)["JobState"] == "COMPLETED"
    assert runs.read_text() == "run \n"
    slurm_cluster.requeue(job)
    deadline = time.monotonic() + 30
    while runs.read_text().count("\n") < 2:
        assert time.monotonic() < deadline, f"not run again: {slurm_cluster.job(job)}"
        time.sleep(0.1)
    record = slurm_cluster.wait_for_end(job)
    assert record["JobState"] == "COMPLETED" and record["Restarts"] == "1", record
    assert runs.read_text() == "run \nrun 1\n"


def test_the_example_sbatch_script_starts_one_pmix_rank_per_task(slurm_cluster, job_dir):
    # examples/slurm/automodel.sbatch as a user submits it, its #SBATCH sizes overridden to fit this node, with a
    # stand-in for automodel that records what each rank was given.
    stand_in = write_script(job_dir / "automodel",
                            f'echo "rank $PMIX_RANK of $SLURM_NTASKS threads $OMP_NUM_THREADS args $*" '
                            f'> {job_dir}/rank.$SLURM_PROCID\n')
    env = dict(slurm_cluster.env, AUTOMODEL=str(stand_in), RECIPE="my recipe.yaml")
    r = subprocess.run(["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
                        "--time=5", f"--output={job_dir}/out", str(EXAMPLE_SBATCH), "--step_scheduler.max_steps", "3"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    record = slurm_cluster.wait_for_end(int(r.stdout.strip().split(";")[0]))
    output = (job_dir / "out").read_text()
    assert record["JobState"] == "COMPLETED", f"{record}\n{output}"
    assert record["Requeue"] == "1" and record["TimeLimit"] == "00:05:00", record
    for rank in (0, 1):
        assert (job_dir / f"rank.{rank}").read_text() == (
            f"rank {rank} of 2 threads 1 args finetune llm -c my recipe.yaml --step_scheduler.max_steps 3\n")
    assert "automodel exited 0" in output, output


def test_mpirun_across_two_namespaces_sums_over_tcp(netns_pair, probe):
    r = netns_pair.mpirun(probe)
    assert r.returncode == 0, r.stdout + r.stderr
    ranks = assert_two_ranks_summed(r.stdout)
    hosts = {int(rank): host for rank, _, host, _ in ranks}
    assert hosts == {0: netns_pair.names[0], 1: netns_pair.names[1]}, r.stdout
    namespaces = {netns for _, _, _, netns in ranks}
    assert len(namespaces) == 2 and os.readlink("/proc/self/ns/net") not in namespaces, r.stdout


def test_shared_memory_cannot_join_the_namespaces(netns_pair, probe):
    # With shared memory as the only BTL the two ranks have no path (Open MPI treats them as two hosts): a clean
    # error rather than a hang, and the proof that the passing run above went over TCP between the namespaces.
    r = netns_pair.mpirun(probe, mca={"btl": "vader,self"}, timeout=60)
    assert r.returncode != 0, r.stdout
    assert "unable to reach each other" in r.stderr, r.stderr


def test_teardown_leaves_no_process_and_no_namespace(probe, job_dir):
    with start_slurm_cluster() as cluster:
        root = cluster.root
        # A job still running at teardown: its ranks, sruns and slurmstepds must go too.
        script = write_script(job_dir / "job.sh", f"srun --mpi=pmix -n 2 {probe} --wait-for-term {job_dir}\n")
        job = cluster.sbatch(script, "-n", "2", "--output=/dev/null")
        cluster.wait_for_state(job, {"RUNNING"})
        deadline = time.monotonic() + 30
        while not (job_dir / "ready.1").exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert processes_of(root)
    assert processes_of(root) == [] and not root.exists()
    pair_root = job_dir / "netns"
    pair_root.mkdir()
    with network_namespace_pair(pair_root) as pair:
        sleeper = subprocess.Popen(pair.command(1, "sleep", "300"), env=mpi_env())
        names = pair.names
    assert sleeper.wait(10) != 0
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in listed for ns in names), listed
