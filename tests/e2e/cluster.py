"""Real multi-process machinery for end-to-end tests: a one-node Slurm (munge, slurmctld, slurmd) in a temp dir, and
two network namespaces joined by a veth pair with mpirun launching across them over TCP.

Use the fixtures by importing them into a test module (pytest finds fixtures in the module's namespace):

    from cluster import netns_pair, slurm_cluster  # noqa: F401 (fixtures)

slurm_cluster yields a SlurmCluster (env with SLURM_CONF for every Slurm command; sbatch, srun, scancel, requeue,
wait_for_end), netns_pair a NetnsPair (command/run in either namespace; mpirun across both). mpi_env() gives the
environment any other MPI command needs. start_slurm_cluster() and network_namespace_pair() are the same as context
managers, for a test that needs its own.

Everything these start is stopped at teardown; what cannot be started because the kernel or container refuses it
(no permission) skips the test with the refusal quoted. A missing tool fails: scripts/setup.sh --cluster installs
them all.
"""
import contextlib
import dataclasses
import itertools
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

# OpenMPI refuses to run as root without both; they go into the env of the commands the harness runs, never into
# the test process's own environment.
MPI_ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
# Processes carry this (with the cluster's directory) so teardown can find the ones a job left behind.
OWNER_VAR = "AUTOMODEL_TEST_CLUSTER"
SLURM_TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scancel", "scontrol", "squeue", "sinfo")
JOB_END_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
                  "BOOT_FAIL", "DEADLINE"}
REFUSAL_PATTERNS = ("Operation not permitted", "Permission denied")
_pair_numbers = itertools.count()


def mpi_env(base=None, **extra):
    """The environment for an MPI command: the given one (default: this process's) without the SLURM_* variables of
    any allocation pytest itself runs in (they would steer srun and mpirun to it), plus MPI_ROOT_ENV and extra."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("SLURM_")}
    env.update(MPI_ROOT_ENV)
    env.update(extra)
    return env


def _require_tools(tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run scripts/setup.sh --cluster", pytrace=False)


def _skip_if_refused(what, text):
    """Skips when text (a command's stderr or a daemon's log) shows the kernel refused; otherwise returns."""
    for line in text.splitlines():
        if any(p in line for p in REFUSAL_PATTERNS):
            pytest.skip(f"the kernel or container refused {what}: {line.strip()}")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refers_to(pid, root, marker):
    """Whether process pid belongs to a cluster in root: it carries the owner marker, or works in or holds open a
    file under root (slurmstepd is started by slurmd without the marker, but keeps slurmd's log open)."""
    proc = pathlib.Path("/proc", str(pid))
    try:
        if marker in (proc / "environ").read_bytes().split(b"\0"):
            return True
        links = [proc / "cwd", *(proc / "fd").iterdir()]
    except OSError:
        return False
    for link in links:
        try:
            if os.readlink(link).startswith(str(root) + "/"):
                return True
        except OSError:
            continue
    return False


def processes_of(root):
    """Pids of the processes that belong to the cluster or namespace pair in root, this process excluded."""
    marker = f"{OWNER_VAR}={root}".encode()
    pids = [int(p.name) for p in pathlib.Path("/proc").iterdir() if p.name.isdigit()]
    return [pid for pid in pids if pid != os.getpid() and _refers_to(pid, root, marker)]


def _kill_all(pids):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stop(process, grace_s=10):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(path, lines=30):
    try:
        return "\n".join(pathlib.Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


def parse_scontrol_record(line):
    """`scontrol show job -o` output as a dict; values end at the next ' Key='."""
    return dict(re.findall(r"(\S+?)=(.*?)(?= \S+?=|$)", line.strip()))


@dataclasses.dataclass
class SlurmCluster:
    """A running one-node cluster. env holds SLURM_CONF and MPI_ROOT_ENV; pass it to every Slurm command."""
    root: pathlib.Path
    conf: pathlib.Path
    node: str
    cpus: int
    env: dict
    jobcomp: pathlib.Path

    def run(self, *args, timeout=60, check=True):
        r = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}{r.stderr}")
        return r

    def sbatch(self, script, *options):
        """Submits script (a path) with sbatch options; returns the job id."""
        r = self.run("sbatch", "--parsable", *options, str(script))
        return int(r.stdout.strip().split(";")[0])

    def srun(self, *args, timeout=120, check=True):
        return self.run("srun", *args, timeout=timeout, check=check)

    def scancel(self, job_id, *options):
        """scancel; note that with --signal and without --batch/--full Slurm signals the job's steps (the tasks srun
        started), not the batch shell."""
        return self.run("scancel", *options, str(job_id))

    def job(self, job_id):
        """The job's record from slurmctld (kept MinJobAge seconds after its end), else from the jobcomp file."""
        r = self.run("scontrol", "show", "job", "-o", str(job_id), check=False)
        if r.returncode == 0 and r.stdout.strip():
            return parse_scontrol_record(r.stdout.splitlines()[0])
        for record in reversed(self.completed_jobs()):
            if record.get("JobId") == str(job_id):
                return record
        raise AssertionError(f"job {job_id} unknown to slurmctld and not in {self.jobcomp}: {r.stderr}")

    def completed_jobs(self):
        """Records of the jobs that ended, as jobcomp/filetxt wrote them."""
        if not self.jobcomp.exists():
            return []
        return [parse_scontrol_record(line) for line in self.jobcomp.read_text().splitlines() if line.strip()]

    def wait_for_state(self, job_id, states, timeout=60):
        """Waits until the job's JobState is one of states; returns its record."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.job(job_id)
            if record.get("JobState") in states:
                return record
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not in {sorted(states)} after {timeout} s: {record}\n"
                                     f"slurmctld log:\n{_tail(self.root / 'log' / 'slurmctld.log')}")
            time.sleep(0.2)

    def wait_for_end(self, job_id, timeout=60):
        return self.wait_for_state(job_id, JOB_END_STATES, timeout)

    def requeue(self, job_id):
        """Requeues a batch job and lets it start at once: slurmctld holds a requeued job back for two minutes
        (its BeginTime) unless told otherwise."""
        self.run("scontrol", "requeue", str(job_id))
        self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")

    def log(self, daemon):
        return _tail(self.root / "log" / f"{daemon}.log")


def _slurm_conf(root, node, cpus, ctld_port, slurmd_port, munge_socket):
    return f"""\
# Written by tests/e2e/cluster.py for one test run: one node, no cgroups, everything under {root}.
ClusterName=automodel-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
PlugStackConfig={root}/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmix
JobCompType=jobcomp/filetxt
JobCompLoc={root}/jobcomp.txt
ReturnToService=2
MinJobAge=300
KillWait=10
InactiveLimit=0
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=256 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _start_daemon(name, args, root, env, started):
    out = open(root / "log" / f"{name}.out", "w")
    process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    out.close()
    started.append(process)
    return process


def _check_alive(process, name, root):
    if process.poll() is not None:
        text = _tail(root / "log" / f"{name}.out") + "\n" + _tail(root / "log" / f"{name}.log")
        _skip_if_refused(f"starting {name}", text)
        pytest.fail(f"{name} exited {process.returncode} at start:\n{text}", pytrace=False)


@contextlib.contextmanager
def start_slurm_cluster():
    """Starts munged, slurmctld and slurmd for this machine as one node, all under a new temp directory, waits for
    the node to be idle, yields a SlurmCluster; at the end cancels every job, stops the daemons, kills what a job
    left behind and removes the directory."""
    _require_tools(SLURM_TOOLS)
    # Not under pytest's basetemp: munged insists that every directory on the way to its socket be traversable by
    # all, and the socket path must stay short (sun_path holds 107 bytes).
    root = pathlib.Path(tempfile.mkdtemp(prefix="am-slurm-")).resolve()
    root.chmod(0o755)
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(mode=0o755)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    (root / "plugstack.conf").write_text("")
    node = socket.gethostname().split(".")[0]
    cpus = len(os.sched_getaffinity(0))
    munge_socket = root / "munge" / "munge.socket"
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, node, cpus, _free_port(), _free_port(), munge_socket))
    env = mpi_env(SLURM_CONF=str(conf), **{OWNER_VAR: str(root)})
    started = []
    cluster = SlurmCluster(root, conf, node, cpus, env, root / "jobcomp.txt")
    try:
        munged = _start_daemon("munged", [
            "munged", "--foreground", f"--socket={munge_socket}", f"--key-file={key}",
            f"--log-file={root}/log/munged.log", f"--pid-file={root}/munge/munged.pid",
            f"--seed-file={root}/munge/munged.seed"], root, env, started)
        deadline = time.monotonic() + 10
        while not munge_socket.exists():
            _check_alive(munged, "munged", root)
            if time.monotonic() > deadline:
                pytest.fail(f"munged made no socket in 10 s:\n{_tail(root / 'log' / 'munged.log')}", pytrace=False)
            time.sleep(0.05)
        ctld = _start_daemon("slurmctld", ["slurmctld", "-D", "-i"], root, env, started)
        slurmd = _start_daemon("slurmd", ["slurmd", "-D", "-N", node], root, env, started)
        deadline = time.monotonic() + 30
        while True:
            _check_alive(ctld, "slurmctld", root)
            _check_alive(slurmd, "slurmd", root)
            r = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False)
            if r.returncode == 0 and r.stdout.strip() == "idle":
                break
            if time.monotonic() > deadline:
                pytest.fail(f"node {node} not idle after 30 s (sinfo: {r.stdout.strip()} {r.stderr.strip()})\n"
                            f"slurmctld:\n{cluster.log('slurmctld')}\nslurmd:\n{cluster.log('slurmd')}",
                            pytrace=False)
            time.sleep(0.2)
        yield cluster
    finally:
        if len(started) == 3 and started[1].poll() is None:
            _cancel_every_job(env)
        for process in reversed(started):
            _stop(process)
        _kill_all(processes_of(root))
        shutil.rmtree(root, ignore_errors=True)


def _cancel_every_job(env):
    r = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, timeout=30)
    jobs = r.stdout.split()
    if not jobs:
        return
    subprocess.run(["scancel", *jobs], env=env, capture_output=True, timeout=30)
    # Tasks that trap SIGTERM get SIGKILL after KillWait (10 s).
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True, timeout=30)
        if r.returncode != 0 or not r.stdout.strip():
            return
        time.sleep(0.2)


@pytest.fixture(scope="module")
def slurm_cluster():
    with start_slurm_cluster() as cluster:
        yield cluster


@dataclasses.dataclass
class NetnsPair:
    """Two network namespaces, each a "host" named as its namespace, joined by a veth pair on subnet."""
    root: pathlib.Path
    names: tuple
    addresses: tuple
    subnet: str

    def command(self, index, *args, hostname=True):
        """argv that runs args in namespace index (0 or 1), with the namespace's name as hostname (a UTS namespace
        of its own) unless hostname is False."""
        ns = self.names[index]
        if not hostname:
            return ["ip", "netns", "exec", ns, *map(str, args)]
        return ["ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', ns,
                *map(str, args)]

    def run(self, index, *args, env=None, timeout=60):
        return subprocess.run(self.command(index, *args), env=mpi_env(env, **{OWNER_VAR: str(self.root)}),
                              capture_output=True, text=True, timeout=timeout)

    def mpirun(self, *args, ranks_per_host=1, mca=None, mpirun_options=(), env=None, timeout=120):
        """mpirun started in namespace 0 with one host per namespace: the ranks in namespace 1 are started by the rsh
        launcher through an agent script that enters that namespace (as ssh would log in), and the ranks talk over
        the veth pair with the TCP BTL only, so nothing can go through shared memory. mca entries replace or add to
        those MCA parameters (mpirun refuses one given twice)."""
        hostfile = self.root / "hostfile"
        hostfile.write_text("".join(f"{ns} slots={ranks_per_host}\n" for ns in self.names))
        params = {"plm": "rsh", "plm_rsh_agent": str(self.root / "launch_agent.sh"), "pml": "ob1", "btl": "tcp,self",
                  "btl_tcp_if_include": self.subnet, "oob_tcp_if_include": self.subnet, **(mca or {})}
        options = ["--hostfile", hostfile, "-np", str(2 * ranks_per_host), "--oversubscribe", "--bind-to", "none"]
        for name, value in params.items():
            options += ["--mca", name, value]
        return self.run(0, "mpirun", *options, *mpirun_options, *args, env=env, timeout=timeout)


def _launch_agent(names):
    cases = "\n".join(f"  {ns}) ;;" for ns in names)
    return f"""#!/bin/sh
# OpenMPI's rsh launcher runs "<agent> <host> <command words...>" as it would ssh; the host is a namespace of this
# pair: run the words there as ssh would (joined, through sh), with the host name as hostname.
host="$1"
shift
case "$host" in
{cases}
  *) echo "launch agent: $host is no namespace of this pair ({' '.join(names)})" >&2; exit 255 ;;
esac
exec ip netns exec "$host" unshare --uts sh -c 'hostname "$0" && exec sh -c "$1"' "$host" "$*"
"""


def _ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def network_namespace_pair(root, subnet_prefix="10.77.0"):
    """Creates namespaces am<pid>-<n>a and am<pid>-<n>b joined by a veth pair (<subnet_prefix>.1 and .2), loopback up
    in each; at the end kills what runs in them and deletes them (which deletes the veth pair)."""
    _require_tools(("ip", "unshare", "mpirun"))
    root = pathlib.Path(root).resolve()
    tag = f"am{os.getpid()}-{next(_pair_numbers)}"
    names = (f"{tag}a", f"{tag}b")
    addresses = (f"{subnet_prefix}.1", f"{subnet_prefix}.2")
    created = []
    try:
        for ns in names:
            r = _ip("netns", "add", ns)
            if r.returncode != 0:
                _skip_if_refused(f"`ip netns add {ns}`", r.stderr)
                pytest.fail(f"ip netns add {ns}: {r.stderr}", pytrace=False)
            created.append(ns)
        # Created straight inside the namespaces, so the names cannot clash with another pair's.
        r = _ip("link", "add", "veth0", "netns", names[0], "type", "veth", "peer", "name", "veth1", "netns", names[1])
        if r.returncode != 0:
            _skip_if_refused("creating a veth pair between namespaces", r.stderr)
            pytest.fail(f"ip link add veth: {r.stderr}", pytrace=False)
        for ns, dev, address in zip(names, ("veth0", "veth1"), addresses):
            for args in (("addr", "add", f"{address}/24", "dev", dev), ("link", "set", dev, "up"),
                         ("link", "set", "lo", "up")):
                r = _ip("-n", ns, *args)
                assert r.returncode == 0, f"ip -n {ns} {' '.join(args)}: {r.stderr}"
        r = subprocess.run(["unshare", "--uts", "true"], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            _skip_if_refused("`unshare --uts` (a hostname per namespace)", r.stderr)
            pytest.fail(f"unshare --uts: {r.stderr}", pytrace=False)
        agent = root / "launch_agent.sh"
        agent.write_text(_launch_agent(names))
        agent.chmod(0o755)
        yield NetnsPair(root, names, addresses, f"{subnet_prefix}.0/24")
    finally:
        for ns in created:
            pids = _ip("netns", "pids", ns).stdout.split()
            _kill_all(int(p) for p in pids)
        _kill_all(processes_of(root))
        for ns in created:
            _ip("netns", "del", ns)


@pytest.fixture(scope="module")
def netns_pair(tmp_path_factory):
    with network_namespace_pair(tmp_path_factory.mktemp("netns")) as pair:
        yield pair
