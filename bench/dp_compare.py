#!/usr/bin/env python3
"""Data-parallel CPU training benchmark: one process with N threads against N ranks with one thread each, at the
same global batch, for automodel (--distributed.strategy ddp over MPI, with and without overlapping the gradient
all-reduce with backward) and for PyTorch + transformers (torch DDP and FSDP2 over gloo, started by torchrun).
Same model directory, token ids, AdamW settings and step counts as bench/train_compare.py, whose helpers it uses.
Prints tokens/s, step time, the exposed gradient-sync wait, peak RSS per rank and their sum, and the ratios
automodel N×1 / automodel 1×N, automodel N×1 / torch DDP N×1 and the share of the all-reduce that backward hides;
--markdown writes the same with the machine, versions and date. See bench/README.md.

  python bench/dp_compare.py --quick
  python bench/dp_compare.py --markdown /tmp/dp.md
"""
import argparse
import datetime
import json
import os
import pathlib
import shlex
import shutil
import signal
import statistics
import sys

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import train_common as common  # noqa: E402
import train_compare as tc  # noqa: E402

TORCH_DP_SCRIPT = HERE / "train_torch_dp.py"

# Every configuration of a run; N is --ranks. The N×1 rows split the global batch into N local batches; the 1×N
# rows give one process the whole global batch and N threads, so both use the same cores on the same tokens.
# An automodel build without FSDP2 across ranks gives `am-fsdp2` an `unsupported` row with its error.
CONFIGS = {
    "am-1xN": dict(framework="automodel", ranks=1, strategy="single"),
    "am-ddp": dict(framework="automodel", ranks="N", strategy="ddp", overlap=True),
    "am-ddp-nooverlap": dict(framework="automodel", ranks="N", strategy="ddp", overlap=False),
    "am-fsdp2": dict(framework="automodel", ranks="N", strategy="fsdp2"),
    "torch-1xN": dict(framework="torch", ranks=1, strategy="single"),
    "torch-ddp": dict(framework="torch", ranks="N", strategy="ddp"),
    "torch-fsdp2": dict(framework="torch", ranks="N", strategy="fsdp2"),
}
DEFAULT_CONFIGS = ["am-1xN", "am-ddp", "am-ddp-nooverlap", "am-fsdp2", "torch-1xN", "torch-ddp", "torch-fsdp2"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="smollm2-135m", choices=sorted(common.SHAPES))
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--modes", type=tc.csv(str), default=["full", "lora"])
    p.add_argument("--dtype", "--dtypes", dest="dtypes", type=tc.csv(str), default=["bf16"], help="fp32, bf16")
    p.add_argument("--ranks", type=int, default=2, help="N: ranks of the N×1 rows, threads of the 1×N rows")
    p.add_argument("--local-batch", type=int, default=1, help="batch of each rank; the global batch is N × this")
    p.add_argument("--configs", type=tc.csv(str), default=DEFAULT_CONFIGS, help=f"of {', '.join(CONFIGS)}")
    p.add_argument("--steps", type=int, default=6, help="timed steps")
    p.add_argument("--warmup-steps", type=int, default=2, help="steps run first and left out of the timing")
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds of every configuration, in turn; a row is the median run")
    p.add_argument("--bucket-cap-mb", type=float, default=None,
                   help="gradient bucket size of automodel's DDP (its default, as torch DDP's, is 25)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--betas", type=tc.csv(float), default=[0.9, 0.999])
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--torch-bf16", choices=["cast", "autocast"], default="cast",
                   help="bf16 on the PyTorch side, as bench/train_compare.py")
    p.add_argument("--torch-attn", default="sdpa")
    p.add_argument("--quick", action="store_true",
                   help="tiny shape, seq 128, 3 timed steps after 1 warmup step (plumbing check, seconds)")
    p.add_argument("--work-dir", default="/tmp/automodel_bench", help="model directories, data, run logs (cached)")
    p.add_argument("--automodel-bin", default=str(REPO / "build" / "automodel"))
    p.add_argument("--automodel-extra", default="", help="extra automodel overrides for every automodel row")
    p.add_argument("--python", default=sys.executable, help="Python with torch, transformers, peft, tokenizers")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    p.add_argument("--mem-limit-gb", type=float, default=None,
                   help="kill a configuration whose ranks' RSS together pass this (default: 90%% of MemAvailable)")
    p.add_argument("--markdown", help="also write the report as markdown to this file")
    p.add_argument("--json", help="also write every measurement as JSON to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.shape, args.seq, args.steps, args.warmup_steps = "tiny", 128, 3, 1
    for m in args.modes:
        if m not in ("full", "lora"):
            p.error(f"unknown mode {m!r}; use full, lora")
    for d in args.dtypes:
        if d not in ("fp32", "bf16"):
            p.error(f"unknown dtype {d!r}; use fp32, bf16")
    for c in args.configs:
        if c not in CONFIGS:
            p.error(f"unknown configuration {c!r}; use {', '.join(CONFIGS)}")
    if args.ranks < 2 or args.local_batch < 1:
        p.error("--ranks must be >= 2 and --local-batch >= 1")
    if args.steps < 1 or args.warmup_steps < 0 or args.repeats < 1:
        p.error("--steps and --repeats must be >= 1, --warmup-steps >= 0")
    if len(args.betas) != 2:
        p.error("--betas takes two values, e.g. 0.9,0.999")
    # What train_compare's helpers read: the global batch, one shape and seq, no activation checkpointing.
    args.batch = args.ranks * args.local_batch
    args.shapes, args.seqs = [args.shape], [args.seq]
    args.argv = argv if argv is not None else sys.argv[1:]
    return args


def config_of(args, name, mode, dtype):
    c = dict(CONFIGS[name])
    ranks = args.ranks if c["ranks"] == "N" else 1
    n = args.ranks
    label = f"{c['framework']} {ranks}×{n // ranks}" + ("" if c["strategy"] == "single" else f" {c['strategy']}")
    if c.get("overlap") is False:
        label += ", no overlap"
    return dict(c, name=name, label=label, ranks=ranks, threads=n // ranks, local_batch=args.batch // ranks,
                shape=args.shape, seq=args.seq, mode=mode, dtype=dtype, ac=False, batch=args.batch)


# ---- peak RSS of every rank ------------------------------------------------------------------------------------------

def proc_status(pid):
    try:
        return {k: v.strip() for k, v in (line.split(":", 1) for line in
                                          pathlib.Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)}
    except OSError:
        return {}


class RankSampler:
    """Called every 0.1 s by run_child with the child's pid: records the peak RSS (VmHWM, the kernel's own high-water
    mark, so a peak between two samples is not missed) of every process below the child whose name is `rank_name`
    (the ranks under mpirun; the child itself is left out, as `automodel --nproc-per-node` turns into mpirun), and
    returns the RSS of the whole tree for the memory limit."""

    def __init__(self, rank_name):
        self.rank_name = rank_name[:15]  # /proc/PID/status Name: is the first 15 characters
        self.peak = {}

    def __call__(self, root):
        total = 0
        for pid in tc.descendants(root):
            st = proc_status(pid)
            total += int(st.get("VmRSS", "0 kB").split()[0]) * 1024
            if pid != root and st.get("Name") == self.rank_name and "VmHWM" in st:
                self.peak[pid] = max(self.peak.get(pid, 0), int(st["VmHWM"].split()[0]) * 1024)
        return total

    def per_rank(self):
        return [self.peak[p] for p in sorted(self.peak)]


# ---- one configuration -----------------------------------------------------------------------------------------------

def child_env(cfg):
    env = tc.thread_env(cfg["threads"])
    if cfg["ranks"] > 1 and os.geteuid() == 0:  # mpirun refuses root without these (containers run as root)
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def run_automodel(args, cfg, model_dir, data, run_dir):
    recipe = run_dir / "recipe.yaml"
    recipe.write_text(tc.automodel_recipe(args, cfg, model_dir, data, run_dir))
    cmd = [args.automodel_bin, "finetune", "llm", "-c", str(recipe), "--threads", str(cfg["threads"])]
    if cfg["ranks"] > 1:
        cmd += ["--distributed.strategy", cfg["strategy"], "--nproc-per-node", str(cfg["ranks"]),
                "--step_scheduler.local_batch_size", str(cfg["local_batch"])]
        if cfg.get("overlap") is False:
            cmd += ["--distributed.overlap_grad_reduce", "false"]
        if args.bucket_cap_mb is not None:
            cmd += ["--distributed.bucket_cap_mb", repr(args.bucket_cap_mb)]
    cmd += shlex.split(args.automodel_extra)
    sampler = RankSampler(pathlib.Path(args.automodel_bin).name)
    r = tc.run_child(cmd, child_env(cfg), str(run_dir / "automodel"), args.timeout, args.mem_limit, sampler)
    # One process: its own ru_maxrss. Ranks: each one's sampled high-water mark (wait4 of mpirun gives only the
    # largest of them).
    per_rank = sampler.per_rank() if cfg["ranks"] > 1 else []
    row = {"command": shlex.join(cmd), "rss_per_rank": per_rank or [r["maxrss_bytes"]]}
    if r["rc"] != 0:
        reason = tc.failure_reason(r)
        row["status"] = "unsupported" if "not built" in reason or "not supported" in reason else "failed"
        row["reason"] = reason
        return row, r
    steps = [json.loads(line) for line in (run_dir / "training.jsonl").read_text().splitlines() if line.strip()]
    row["steps"] = [{"step": s["step"], "loss": s["loss"], "tokens": s["num_tokens_per_step"],
                     "seconds": s["num_tokens_per_step"] / s["tps"] if s.get("tps") else float("nan"),
                     "wait": s.get("grad_sync_wait_s")} for s in steps]
    row["status"] = "ok"
    return row, r


def run_torch(args, cfg, model_dir, data, run_dir):
    extra = tc.torch_train_args(args, cfg, model_dir, data, cfg["local_batch"])
    result = run_dir / "torch.json"
    if cfg["ranks"] == 1:
        cmd = [args.python, str(tc.TORCH_SCRIPT), "train", *extra, "--result", str(result)]
    else:
        cmd = [args.python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(cfg["ranks"]),
               str(TORCH_DP_SCRIPT), "--strategy", cfg["strategy"], *extra, "--result", str(result)]
    sampler = RankSampler("python")
    r = tc.run_child(cmd, child_env(cfg), str(run_dir / "torch"), args.timeout, args.mem_limit, sampler)
    row = {"command": shlex.join(cmd)}
    if r["rc"] != 0 or not result.exists():
        row["status"], row["reason"] = "failed", tc.failure_reason(r)
        row["rss_per_rank"] = [r["maxrss_bytes"]]
        return row, r
    res = json.loads(result.read_text())
    if cfg["ranks"] == 1:
        row["rss_per_rank"] = [r["maxrss_bytes"]]
    else:  # each worker's own ru_maxrss (the torchrun agent is not a rank)
        reports = [json.loads((run_dir / f"torch.rank{i}.json").read_text()) for i in range(cfg["ranks"])]
        row["rss_per_rank"] = [x["maxrss_bytes"] for x in reports]
    row.update(status="ok", steps=[dict(s, wait=None) for s in res["steps"]], trainable_params=res["trainable_params"],
               trainable_dtypes=res.get("trainable_dtypes"), frozen_dtypes=res.get("frozen_dtypes"))
    return row, r


def measure(args, cfg, model_dir, data, work, rep):
    run_dir = work / "runs" / f"dp-{cfg['name']}-{cfg['shape']}-{cfg['seq']}-{cfg['mode']}-{cfg['dtype']}-r{rep + 1}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    runner = run_torch if cfg["framework"] == "torch" else run_automodel
    row, r = runner(args, cfg, model_dir, data, run_dir)
    row.update(cfg, log=str(run_dir), wall_s=r["wall_s"])
    row["rss_per_rank_mb"] = [b / 2**20 for b in row.pop("rss_per_rank")]
    row["peak_rss_mb"] = sum(row["rss_per_rank_mb"])
    if row["status"] != "ok":
        return row
    steps = row.pop("steps")
    timed = [s for s in steps if s["step"] >= args.warmup_steps]
    row["step_seconds"] = [s["seconds"] for s in timed]
    row["wait_seconds"] = [s["wait"] for s in timed if s["wait"] is not None]
    seconds = statistics.median(row["step_seconds"]) if timed else 0.0
    row["loss0"] = steps[0]["loss"] if steps else None
    row["tokens_per_step"] = timed[0]["tokens"] if timed else None
    row["tokens_per_s"] = timed[0]["tokens"] / seconds if seconds > 0 else None
    row["step_ms"] = 1e3 * seconds if timed else None
    row["step_ms_max"] = 1e3 * max(row["step_seconds"]) if timed else None
    return row


def merge_runs(runs):
    """train_compare's median run, plus what every run measured: the step and wait times of all of them (the wait
    and its share of the step are medians over these pooled timed steps) and the largest peak RSS of each rank."""
    row = tc.merge_repeats(runs)
    if row["status"] != "ok":
        return row
    row = dict(row)
    row["rss_per_rank_mb"] = [max(x) for x in zip(*(r["rss_per_rank_mb"] for r in runs))]
    row["peak_rss_mb"] = sum(row["rss_per_rank_mb"])
    row["step_seconds"] = [s for r in runs for s in r["step_seconds"]]
    row["wait_seconds"] = [s for r in runs for s in r["wait_seconds"]]
    if row["wait_seconds"]:
        row["wait_ms"] = 1e3 * statistics.median(row["wait_seconds"])
        row["wait_share"] = row["wait_ms"] / (1e3 * statistics.median(row["step_seconds"]))
    return row


# ---- report ----------------------------------------------------------------------------------------------------------

COLUMNS = ["mode", "dtype", "configuration", "local batch", "tokens/s", "step ms (max)", "GFLOP/s per rank",
           "sync wait ms", "wait / step", "peak RSS per rank MB", "RSS sum MB", "loss@0", "status"]
SUMMARY_COLUMNS = ["mode", "dtype", "automodel ddp N×1 / 1×N", "automodel fsdp2 N×1 / 1×N",
                   "automodel ddp N×1 / torch DDP N×1", "automodel fsdp2 N×1 / torch FSDP2 N×1",
                   "torch DDP N×1 / torch 1×N", "torch FSDP2 N×1 / torch 1×N", "hidden share of the all-reduce",
                   "exposed wait / step (overlap)", "all-reduce / step (no overlap)"]


def status_of(r, rows):
    if r["status"] != "ok":
        return f"{r['status']}: {r.get('reason', '')[:160]}"
    status = "ok"
    ref = next((x for x in rows if x["framework"] == r["framework"] and x["ranks"] == 1 and x["mode"] == r["mode"]
                and x["dtype"] == r["dtype"] and x.get("loss0") is not None), None)
    tol = 1e-4 if r["dtype"] == "fp32" else 2e-2
    if ref is not r and ref and abs(r["loss0"] - ref["loss0"]) > tol * abs(ref["loss0"]):
        status += f" (loss@0 differs from {ref['label']}'s {ref['loss0']:.5f})"
    if r.get("tokens_per_step") != r["batch"] * r["seq"]:
        status += f" (trained {r.get('tokens_per_step')} tokens/step, expected {r['batch'] * r['seq']})"
    return status


def table_rows(rows):
    out = []
    for r in rows:
        ok = r["status"] == "ok"
        flops = common.train_flops_per_token(common.SHAPES[r["shape"]], r["seq"], r["mode"])
        per_rank = r["tokens_per_s"] * flops / r["ranks"] / 1e9 if ok and r.get("tokens_per_s") else None
        out.append([r["mode"], r["dtype"], r["label"], str(r["local_batch"]), tc.tokens_per_s(r) if ok else "—",
                    tc.step_ms(r) if ok else "—", tc.fmt(per_rank, ".1f"), tc.fmt(r.get("wait_ms"), ".1f"),
                    tc.fmt(100 * r["wait_share"] if r.get("wait_share") is not None else None, ".1f") +
                    ("%" if r.get("wait_share") is not None else ""),
                    " / ".join(f"{m:.0f}" for m in r["rss_per_rank_mb"]) if r.get("rss_per_rank_mb") else "—",
                    tc.fmt(r.get("peak_rss_mb"), ".0f"), tc.fmt(r.get("loss0"), ".5f"), status_of(r, rows)])
    return out


def ratio(a, b):
    """a's tokens/s over b's: of the two rows, then of each round's runs in parentheses (runs of one round are
    minutes apart, so on a drifting VM their ratio is steadier than the ratio of the medians)."""
    if not (a and b and a.get("tokens_per_s") and b.get("tokens_per_s")):
        return "—"
    text = f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}×"
    ra, rb = a.get("repeat_tokens_per_s"), b.get("repeat_tokens_per_s")
    if ra and rb and len(ra) == len(rb):
        text += " (" + ", ".join(f"{x / y:.2f}" for x, y in zip(ra, rb)) + ")"
    return text


def hidden_share(overlap, no_overlap):
    """1 − wait(overlap) / wait(no overlap), each the median over its timed steps: without overlap the step waits for
    the whole all-reduce, with overlap only for what backward did not hide."""
    if not overlap or not no_overlap or not overlap.get("wait_seconds") or not no_overlap.get("wait_seconds"):
        return None
    full = statistics.median(no_overlap["wait_seconds"])
    return 1 - statistics.median(overlap["wait_seconds"]) / full if full > 0 else None


def summary_rows(rows):
    out = []
    for mode, dtype in dict.fromkeys((r["mode"], r["dtype"]) for r in rows):
        by = {r["name"]: r for r in rows if r["mode"] == mode and r["dtype"] == dtype and r["status"] == "ok"}
        pct = lambda v: tc.fmt(100 * v if v is not None else None, ".1f") + ("%" if v is not None else "")  # noqa
        out.append([mode, dtype, ratio(by.get("am-ddp"), by.get("am-1xN")), ratio(by.get("am-fsdp2"), by.get("am-1xN")),
                    ratio(by.get("am-ddp"), by.get("torch-ddp")), ratio(by.get("am-fsdp2"), by.get("torch-fsdp2")),
                    ratio(by.get("torch-ddp"), by.get("torch-1xN")), ratio(by.get("torch-fsdp2"), by.get("torch-1xN")),
                    pct(hidden_share(by.get("am-ddp"), by.get("am-ddp-nooverlap"))),
                    pct(by.get("am-ddp", {}).get("wait_share")), pct(by.get("am-ddp-nooverlap", {}).get("wait_share"))])
    return out


def notes(args):
    n = args.ranks
    return [
        f"N = {n}. `1×{n}`: one process with {n} threads and the global batch {args.batch}; `{n}×1`: {n} ranks with "
        f"one thread and local batch {args.local_batch} each (global batch {args.batch}), on the same cores and the "
        f"same token ids. {args.warmup_steps} warmup step(s), then {args.steps} timed step(s); tokens/s = global "
        "tokens per step / the median timed step (step ms: that median, the slowest timed step in parentheses). "
        f"AdamW lr {args.lr:g}, betas {tuple(args.betas)}, eps {args.eps:g}, weight decay {args.weight_decay:g}.",
        "automodel: `--distributed.strategy ddp --nproc-per-node N` (mpirun, bucketed gradient all-reduce started "
        "during backward as each layer's gradients are final; `--distributed.overlap_grad_reduce false` starts every "
        "bucket after backward). PyTorch: torchrun (`python -m torch.distributed.run --standalone`), gloo, "
        "`DistributedDataParallel(model)` or `fully_shard` on every decoder layer and the root (FSDP2, "
        "bench/train_torch_dp.py); bf16 is `model.to(torch.bfloat16)` as in train_compare.py"
        + (" (--torch-bf16 autocast: fp32 weights under autocast)" if args.torch_bf16 == "autocast" else "") + ".",
        "sync wait: automodel's `grad_sync_wait_s`, the seconds a step waited for the gradient all-reduce after "
        "backward (the part backward did not hide), median over the timed steps; wait / step: that median over the "
        "median step time. Without overlap the wait is the whole all-reduce, so hidden share = 1 − wait(overlap) / "
        "wait(no overlap): 100% means backward hid the all-reduce entirely, 0% that overlapping gained nothing; "
        "where the all-reduce is a small share of the step (LoRA's adapters) the share is within the noise.",
        "GFLOP/s per rank: model FLOPs (bench/README.md's formula: 6·N_matmul per token for full, 4·N_matmul + "
        "6·N_lora for LoRA, plus attention) × tokens/s / ranks.",
        "Peak RSS per rank: automodel ranks' VmHWM (the kernel's high-water mark, sampled every 0.1 s under mpirun), "
        "torch ranks' own ru_maxrss (written by each worker), ru_maxrss of a single process; RSS sum adds the "
        "ranks' peaks (an upper bound of the job's peak; mpirun and the torchrun agent are not counted).",
        "loss@0 is the first step's loss (the mean over the ranks); a rank row's status says when it differs from "
        "the same framework's 1-process loss beyond rounding.",
        *([f"Each configuration ran {args.repeats} times, all configurations in turn; a row is the median run by "
           "tokens/s ([min–max] beside it), the waits are medians over the pooled timed steps of all runs, peak RSS "
           "the largest of the runs."] if args.repeats > 1 else []),
    ]


def report(args, rows, env, machine, am_info, started):
    head = [f"date: {started}", f"command: python bench/dp_compare.py {shlex.join(args.argv)}",
            f"machine: {machine['cpu']}, {machine['cpus']} CPUs ({machine['isa']}), {machine['mem_gib']} GiB, "
            f"Linux {machine['kernel']}",
            f"automodel: commit {am_info['commit']}, binary {am_info['binary']} (built {am_info['binary_built']})",
            "python stack: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()),
            f"shape {args.shape} ({common.fmt_count(common.param_counts(common.SHAPES[args.shape])['total'])} "
            f"parameters), seq {args.seq}, global batch {args.batch}"]
    summary_header = [c.replace("N×", f"{args.ranks}×").replace("×N", f"×{args.ranks}") for c in SUMMARY_COLUMNS]
    return head, (COLUMNS, table_rows(rows)), (summary_header, summary_rows(rows))


def write_markdown(path, args, parts):
    head, table, summary = parts
    text = ["## Data-parallel training: automodel vs PyTorch + transformers", ""] + [f"- {h}" for h in head] + [""]
    text += [tc.md_table(*table), "", tc.md_table(*summary), "", "Notes:", ""] + [f"- {n}" for n in notes(args)]
    pathlib.Path(path).write_text("\n".join(text) + "\n")


# ---- main ------------------------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    # kill PID (a background run ignores Ctrl-C): leave through run_child's cleanup, which ends the ranks too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    work = pathlib.Path(args.work_dir)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    args.mem_limit = int(0.9 * tc.meminfo_bytes("MemAvailable") if args.mem_limit_gb is None
                         else args.mem_limit_gb * 2**30)
    if any(CONFIGS[c]["framework"] == "automodel" for c in args.configs) and not os.path.exists(args.automodel_bin):
        sys.exit(f"no automodel binary at {args.automodel_bin}: build it (make automodel_cli) or pass --automodel-bin")

    machine, am_info = tc.machine_info(), tc.automodel_info(args)
    env, _ = tc.torch_json(args, "env", [], str(work / "logs" / "env"), timeout=300)
    env = env or {}
    model_dirs, data = tc.prepare_assets(args, work)
    out_json = pathlib.Path(args.json or work / "results" / "dp_latest.json")
    out_json.parent.mkdir(parents=True, exist_ok=True)

    rows = []
    for mode in args.modes:
        for dtype in args.dtypes:
            cfgs = [config_of(args, name, mode, dtype) for name in args.configs]
            runs = {c["name"]: [] for c in cfgs}
            for rep in range(args.repeats):
                for cfg in cfgs:
                    run = f" run {rep + 1}/{args.repeats}" if args.repeats > 1 else ""
                    print(f"{cfg['label']:32s} {args.shape} seq {args.seq} {mode} {dtype}{run} ...", end=" ",
                          flush=True)
                    row = measure(args, cfg, model_dirs[args.shape], data[args.seq], work, rep)
                    runs[cfg["name"]].append(row)
                    if row["status"] == "ok":
                        print(f"{row['tokens_per_s']:.1f} tok/s, {row['peak_rss_mb']:.0f} MB, "
                              f"loss@0 {row['loss0']:.5f}", flush=True)
                    else:
                        print(f"{row['status']}: {row.get('reason')}", flush=True)
            rows += [merge_runs(runs[c["name"]]) for c in cfgs]
            out_json.write_text(json.dumps({"date": started, "machine": machine, "automodel": am_info, "env": env,
                                            "argv": args.argv, "rows": rows}, indent=1))

    parts = report(args, rows, env, machine, am_info, started)
    head, table, summary = parts
    print()
    print("\n".join(head))
    print()
    print(tc.text_table(*table))
    print()
    print(tc.text_table(*summary))
    print()
    print("\n".join(f"- {n}" for n in notes(args)))
    if args.markdown:
        write_markdown(args.markdown, args, parts)
        print(f"\nwrote {args.markdown}")
    print(f"measurements: {out_json}")


if __name__ == "__main__":
    main()
