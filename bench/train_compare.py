#!/usr/bin/env python3
"""Side-by-side CPU training benchmark: automodel vs PyTorch + transformers (+ peft for LoRA), and optionally
llama.cpp's own training (framework llamacpp, bench/llamacpp_peer.py), on the same model directory, token ids, batch,
sequence length, AdamW settings and step count, each configuration in its own process.
Prints tokens/s, step time, peak RSS, MFU and loss@step0 per configuration and the ratio of automodel to PyTorch's
best thread count; --markdown writes the same with the machine, versions and date. See bench/README.md.

  python bench/train_compare.py --quick
  python bench/train_compare.py --shapes smollm2-135m --seqs 512 --markdown /tmp/smollm2.md
"""
import argparse
import datetime
import itertools
import json
import os
import pathlib
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import llamacpp_peer  # noqa: E402
import train_common as common  # noqa: E402

TORCH_SCRIPT = HERE / "train_torch.py"
PEFT_TARGET = "nemo_automodel.components._peft.lora.PeftConfig"


def csv(kind):
    return lambda s: [kind(x) for x in s.split(",") if x]


def torch_variant(framework, torch_bf16="cast"):
    """How a PyTorch framework name runs: torch (eager), torch-autocast, torch-compile, torch-compile-autocast,
    torch-compile-max (mode max-autotune), torch-compile-max-autocast. Returns (compile mode, bf16 handling)."""
    compile_mode = "none"
    if framework.startswith("torch-compile"):
        compile_mode = "max-autotune" if framework.startswith("torch-compile-max") else "default"
    return compile_mode, "autocast" if framework.endswith("-autocast") else torch_bf16


TORCH_FRAMEWORKS = ["torch", "torch-autocast", "torch-compile", "torch-compile-autocast", "torch-compile-max",
                    "torch-compile-max-autocast"]


def is_torch(framework):
    return framework in TORCH_FRAMEWORKS


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", type=csv(str), default=["smollm2-135m"], help=f"of {', '.join(common.SHAPES)}")
    p.add_argument("--seqs", type=csv(int), default=[512, 2048])
    p.add_argument("--threads", type=csv(int), default=[1, 2])
    p.add_argument("--modes", type=csv(str), default=["full", "lora"])
    p.add_argument("--dtype", "--dtypes", dest="dtypes", type=csv(str), default=["fp32", "bf16"])
    p.add_argument("--frameworks", type=csv(str),
                   default=["automodel", "torch", "torch-autocast", "torch-compile", "torch-compile-autocast"],
                   help="automodel, baseline, llamacpp (llama.cpp's llama-finetune: full fine-tune, fp32, batch 1, "
                   "seq a multiple of 256), and PyTorch's variants: " + ", ".join(TORCH_FRAMEWORKS) +
                   " (-autocast: bf16 autocast over fp32 weights, run for dtype bf16 only; -max: torch.compile's "
                   "max-autotune mode)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=8, help="timed steps")
    p.add_argument("--warmup-steps", type=int, default=2, help="steps run first and left out of the timing")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs of each configuration, alternating the frameworks; the row is the median run")
    p.add_argument("--activation-checkpointing", choices=["off", "on", "both"], default="off")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--betas", type=csv(float), default=[0.9, 0.999])
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--torch-bf16", choices=["cast", "autocast"], default="cast",
                   help="bf16 on the PyTorch side: model.to(bfloat16) (weights, grads and AdamW state in bf16) or "
                        "fp32 weights under torch.autocast('cpu', bfloat16)")
    p.add_argument("--torch-attn", default="sdpa", help="transformers attn_implementation (sdpa, eager)")
    p.add_argument("--quick", action="store_true",
                   help="tiny shape, seq 256, batch 2, 3 timed steps after 1 warmup step (plumbing check, seconds)")
    p.add_argument("--work-dir", default="/tmp/automodel_bench", help="model directories, data, run logs (cached)")
    p.add_argument("--automodel-bin", default=str(REPO / "build" / "automodel"))
    p.add_argument("--baseline-bin", help="another automodel binary (e.g. a build of the previous commit), run in turn "
                   "with the others as framework 'baseline'; the report adds automodel / baseline per configuration")
    p.add_argument("--automodel-bench", default=None,
                   help="automodel_bench binary for its GEMM peak (default: bench/automodel_bench beside "
                        "--automodel-bin; skipped when absent)")
    p.add_argument("--automodel-extra", default="",
                   help="extra automodel overrides, e.g. \"--loss_fn._target_ "
                        "nemo_automodel.components.loss.linear_ce.FusedLinearCrossEntropy\"")
    p.add_argument("--llamacpp-dir", default=None,
                   help="llama.cpp's source, build, GGUF models and texts (default: <work-dir>/llamacpp; built once)")
    p.add_argument("--llamacpp-src", default=None,
                   help="a llama.cpp source tree to build instead of the one vendored in the llama-cpp-python "
                        f"{llamacpp_peer.LLAMA_CPP_PYTHON} sdist (which pip downloads)")
    p.add_argument("--python", default=sys.executable, help="Python with torch, transformers, peft, tokenizers")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    p.add_argument("--mem-limit-gb", type=float, default=None,
                   help="kill a configuration whose RSS passes this (default: 90%% of MemAvailable at start)")
    p.add_argument("--gemm-n", type=int, default=2048, help="size of the square GEMM timed for the peak")
    p.add_argument("--markdown", help="also write the report as markdown to this file")
    p.add_argument("--json", help="also write every measurement as JSON to this file")
    args = p.parse_args(argv)
    if args.quick:
        # seq 256: llama.cpp pads its context to a multiple of 256 tokens
        args.shapes, args.seqs, args.batch, args.steps, args.warmup_steps = ["tiny"], [256], 2, 3, 1
    for s in args.shapes:
        if s not in common.SHAPES:
            p.error(f"unknown shape {s!r}; use {', '.join(common.SHAPES)}")
    for m in args.modes:
        if m not in ("full", "lora"):
            p.error(f"unknown mode {m!r}; use full, lora")
    for d in args.dtypes:
        if d not in ("fp32", "bf16"):
            p.error(f"unknown dtype {d!r}; use fp32, bf16")
    if args.baseline_bin and "baseline" not in args.frameworks:
        args.frameworks.append("baseline")
    for f in args.frameworks:
        if f not in ("automodel", "llamacpp") and not is_torch(f) and not (f == "baseline" and args.baseline_bin):
            p.error(f"unknown framework {f!r}; use automodel, llamacpp, {', '.join(TORCH_FRAMEWORKS)} "
                    "(baseline: give --baseline-bin)")
    if args.baseline_bin and not os.path.exists(args.baseline_bin):
        p.error(f"no automodel binary at --baseline-bin {args.baseline_bin}")
    if len(args.betas) != 2:
        p.error("--betas takes two values, e.g. 0.9,0.999")
    if args.steps < 1 or args.warmup_steps < 0:
        p.error("--steps must be >= 1 and --warmup-steps >= 0")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.automodel_bench is None:
        args.automodel_bench = str(pathlib.Path(args.automodel_bin).parent / "bench" / "automodel_bench")
    args.argv = argv if argv is not None else sys.argv[1:]
    return args


# ---- child processes -------------------------------------------------------------------------------------------------

def meminfo_bytes(key):
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def rss_bytes(pid):
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def descendants(pid):
    """pid and every process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo += [int(c) for c in pathlib.Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            pass
    return out


def kill_tree(pid):
    """SIGKILL to pid's process group and to every process below it (torchrun starts its workers in sessions of
    their own, so the group alone would leave them running)."""
    tree = descendants(pid)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in tree[1:]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_child(cmd, env, log_prefix, timeout, mem_limit, rss_of=rss_bytes):
    """Runs cmd to completion with its own rusage: peak RSS is os.wait4's ru_maxrss of this one child (no other
    process is counted). Killed past `timeout` seconds or when rss_of(its pid) passes `mem_limit` bytes; rss_of is
    called every 0.1 s (bench/dp_compare.py passes one that samples every rank of an mpirun or torchrun child and
    returns their sum). The child leads its own process group; a kill also ends the ranks it started."""
    out = open(f"{log_prefix}.out", "w")
    err = open(f"{log_prefix}.err", "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
    killed = None
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            rss = rss_of(proc.pid)
            if killed is None:
                if time.monotonic() - t0 > timeout:
                    killed = f"timeout after {timeout:.0f} s"
                elif mem_limit and rss > mem_limit:
                    killed = f"RSS passed the memory limit {mem_limit / 2**30:.1f} GiB"
                if killed:
                    kill_tree(proc.pid)
            time.sleep(0.1)
    except BaseException:  # Ctrl-C: leave no child running
        kill_tree(proc.pid)
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
    out.close()
    err.close()
    return {"rc": proc.returncode, "killed": killed, "maxrss_bytes": usage.ru_maxrss * 1024,
            "wall_s": time.monotonic() - t0, "stdout": pathlib.Path(f"{log_prefix}.out").read_text(errors="replace"),
            "stderr": pathlib.Path(f"{log_prefix}.err").read_text(errors="replace")}


def thread_env(threads):
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def failure_reason(r):
    if r["killed"]:
        return r["killed"]
    if r["rc"] < 0:
        sig = -r["rc"]
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return f"killed by {name}" + (" (out of memory?)" if sig == signal.SIGKILL else "")
    lines = [ln.strip() for ln in r["stderr"].splitlines() if ln.strip()]
    # automodel prints "error: ..." ("error (rank R of N): ..." under MPI), Python a traceback whose last line is
    # the exception.
    msg = next((ln for ln in lines if re.match(r"error( \(rank \d+ of \d+\))?:", ln)),
               lines[-1] if lines else f"exit status {r['rc']}")
    return msg[:200]


def torch_json(args, sub, extra, log_prefix, threads=1, timeout=None):
    result = f"{log_prefix}.json"
    if os.path.exists(result):
        os.remove(result)
    r = run_child([args.python, str(TORCH_SCRIPT), sub, *extra, "--result", result], thread_env(threads), log_prefix,
                  timeout or args.timeout, args.mem_limit)
    if r["rc"] != 0 or not os.path.exists(result):
        return None, r
    return json.loads(pathlib.Path(result).read_text()), r


# ---- environment, assets, GEMM peaks ---------------------------------------------------------------------------------

def machine_info():
    cpu, flags = "unknown", set()
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and cpu == "unknown":
            cpu = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"]
    return {"cpu": cpu, "cpus": os.cpu_count(), "isa": " ".join(f for f in wanted if f in flags),
            "mem_gib": round(meminfo_bytes("MemTotal") / 2**30, 1), "kernel": platform.release()}


def automodel_info(args):
    def git(*a):
        try:
            return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""
    commit = git("rev-parse", "--short=12", "HEAD").strip() or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    b = pathlib.Path(args.automodel_bin)
    built = datetime.datetime.fromtimestamp(b.stat().st_mtime).isoformat(timespec="seconds") if b.exists() else None
    return {"commit": commit + ("+dirty" if dirty else ""), "binary": str(b), "binary_built": built}


def prepare_assets(args, work):
    model_dirs = {}
    for shape in args.shapes:
        d = work / "models" / shape
        if not (d / "config.json").exists():
            print(f"writing the {shape} model directory (random weights, transformers) ...", flush=True)
            res, r = torch_json(args, "assets", ["--work-dir", str(work), "--shape", shape],
                                str(work / "logs" / f"assets-{shape}"), timeout=3600)
            if res is None:
                sys.exit(f"could not write the {shape} model directory: {failure_reason(r)}")
        model_dirs[shape] = str(d)
    data = {}
    (work / "data").mkdir(parents=True, exist_ok=True)
    n = args.batch * (args.steps + args.warmup_steps)
    for seq in args.seqs:
        path = work / "data" / f"seq{seq}_n{n}.jsonl"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            common.write_data(tmp, seq, n)
            tmp.rename(path)
        data[seq] = str(path)
    return model_dirs, data


def gemm_peak(args, work, dtype, threads, tag=""):
    """GFLOP/s of a square GEMM of dtype at threads: torch.matmul, and automodel_bench's sgemm_f32_nn /
    gemm_bf16_onednn_nn when that binary exists. The peak used for MFU is the larger of the two."""
    entry = {}
    res, r = torch_json(args, "gemm", ["--threads", str(threads), "--dtype", dtype, "--n", str(args.gemm_n)],
                        str(work / "logs" / f"gemm-torch-{dtype}-t{threads}{tag}"), threads=threads, timeout=300)
    entry["torch"] = res["gflops"] if res else None
    if os.path.exists(args.automodel_bench):
        name = {"fp32": "sgemm_f32_nn", "bf16": "gemm_bf16_onednn_nn"}[dtype]
        n = args.gemm_n
        cmd = [args.automodel_bench, f"--benchmark_filter=^{name}/M:{n}/N:{n}/K:{n}/",
               "--benchmark_format=json", "--benchmark_min_time=1"]
        r = run_child(cmd, thread_env(threads), str(work / "logs" / f"gemm-automodel-{dtype}-t{threads}{tag}"),
                      300, None)
        try:
            benches = json.loads(r["stdout"])["benchmarks"]
            entry["automodel"] = max(b["GFLOP/s"] for b in benches)
        except (ValueError, KeyError):
            entry["automodel"] = None  # no GEMM of that size in this build of automodel_bench
    known = [v for v in entry.values() if v]
    entry["peak"] = max(known) if known else None
    print(f"GEMM peak {dtype} {threads} thread(s){' ' + tag if tag else ''}: " +
          ", ".join(f"{k} {v:.1f}" if v else f"{k} n/a" for k, v in entry.items()) + " GFLOP/s", flush=True)
    return entry


def gemm_peaks(args, work):
    """The peak of every (dtype, threads) of the run, measured at its start."""
    return {(dtype, threads): gemm_peak(args, work, dtype, threads) for threads in args.threads for dtype in args.dtypes}


# ---- one configuration -----------------------------------------------------------------------------------------------

def optimizer_lines(args):
    """The recipe's optimizer section: the AdamW settings the PyTorch side gets too."""
    return ["optimizer:", "  _target_: torch.optim.AdamW", f"  lr: {args.lr:.6e}",
            f"  betas: [{args.betas[0]:.6e}, {args.betas[1]:.6e}]", f"  eps: {args.eps:.6e}",
            f"  weight_decay: {args.weight_decay:.6e}"]


def automodel_recipe(args, cfg, model_dir, data, run_dir):
    total = args.steps + args.warmup_steps
    lines = [
        "recipe:",
        "  _target_: nemo_automodel.recipes.llm.train_ft.TrainFinetuneRecipeForNextTokenPrediction",
        "step_scheduler:",
        f"  global_batch_size: {args.batch}",
        f"  local_batch_size: {args.batch}",
        f"  max_steps: {total}",
        "  num_epochs: 1",
        "rng:",
        "  seed: 1234",
        "model:",
        "  _target_: nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained",
        f"  pretrained_model_name_or_path: {json.dumps(model_dir)}",
        f"  torch_dtype: {'bfloat16' if cfg['dtype'] == 'bf16' else 'float32'}",
        "checkpoint:",
        "  enabled: false",
        f"  checkpoint_dir: {json.dumps(str(run_dir))}",
        "dataset:",
        "  _target_: nemo_automodel.components.datasets.llm.column_mapped_text_instruction_dataset."
        "ColumnMappedTextInstructionDataset",
        f"  path_or_dataset: {json.dumps(data)}",
        f"  column_mapping: {{question: {common.TEXT_COLUMN}, answer: {common.ANSWER_COLUMN}}}",
        "  answer_only_loss_mask: false",
        # seq + 1 tokens, then inputs = all but the last and labels = all but the first: seq of each.
        f"  seq_length: {cfg['seq'] + 1}",
        "  truncation: longest_first",
        "dataloader:",
        "  _target_: torchdata.stateful_dataloader.StatefulDataLoader",
        "  collate_fn:",
        "    _target_: nemo_automodel.components.datasets.utils.default_collater",
        "  shuffle: false",
        *optimizer_lines(args),
    ]
    if cfg["ac"]:
        lines += ["distributed:", "  activation_checkpointing: true"]
    if cfg["mode"] == "lora":
        lines += ["peft:", f"  _target_: {PEFT_TARGET}", "  target_modules: ['*_proj']",
                  f"  dim: {common.LORA_RANK}", f"  alpha: {common.LORA_ALPHA}", "  dropout: 0.0"]
    return "\n".join(lines) + "\n"


def run_automodel(args, cfg, model_dir, data, run_dir):
    recipe = run_dir / "recipe.yaml"
    recipe.write_text(automodel_recipe(args, cfg, model_dir, data, run_dir))
    binary = args.baseline_bin if cfg["framework"] == "baseline" else args.automodel_bin
    cmd = [binary, "finetune", "llm", "-c", str(recipe), "--threads", str(cfg["threads"]),
           *shlex.split(args.automodel_extra)]
    r = run_child(cmd, thread_env(cfg["threads"]), str(run_dir / "automodel"), args.timeout, args.mem_limit)
    row = {"command": shlex.join(cmd)}
    log = run_dir / "training.jsonl"
    if r["rc"] != 0:
        reason = failure_reason(r)
        lora_refused = cfg["mode"] == "lora" and "peft" in reason.lower() and not r["killed"]
        row["status"] = "unsupported" if lora_refused else "failed"
        row["reason"] = reason
        return row, r
    steps = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    m = re.search(r"\((\d+) trainable\)", r["stdout"])
    row["trainable_params"] = int(m.group(1)) if m else None
    row["steps"] = [{"step": s["step"], "loss": s["loss"], "tokens": s["num_tokens_per_step"],
                     "seconds": s["num_tokens_per_step"] / s["tps"] if s.get("tps") else float("nan")} for s in steps]
    row["alloc_peak_mb"] = max(s.get("mem", 0.0) for s in steps) * 1024
    row["status"] = "ok"
    return row, r


def torch_train_args(args, cfg, model_dir, data, batch):
    """The options of bench/train_torch.py `train` (and of bench/train_torch_dp.py) for one configuration."""
    compile_mode, bf16 = torch_variant(cfg.get("framework", "torch"), args.torch_bf16)
    extra = ["--model-dir", model_dir, "--data", data, "--seq", str(cfg["seq"]), "--batch", str(batch),
             "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps), "--threads", str(cfg["threads"]),
             "--mode", cfg["mode"], "--dtype", cfg["dtype"], "--bf16", bf16, "--attn", args.torch_attn,
             "--compile", compile_mode,
             "--lr", repr(args.lr), "--beta1", repr(args.betas[0]), "--beta2", repr(args.betas[1]),
             "--eps", repr(args.eps), "--weight-decay", repr(args.weight_decay)]
    if cfg["ac"]:
        extra.append("--activation-checkpointing")
    return extra


def run_torch(args, cfg, model_dir, data, run_dir):
    extra = torch_train_args(args, cfg, model_dir, data, args.batch)
    res, r = torch_json(args, "train", extra, str(run_dir / "torch"), threads=cfg["threads"])
    row = {"command": shlex.join([args.python, str(TORCH_SCRIPT), "train", *extra])}
    if res is None:
        row["status"], row["reason"] = "failed", failure_reason(r)
        return row, r
    row.update(status="ok", steps=res["steps"], trainable_params=res["trainable_params"],
               frozen_dtypes=res.get("frozen_dtypes"), trainable_dtypes=res.get("trainable_dtypes"))
    return row, r


def run_llamacpp(args, cfg, model_dir, data, run_dir):
    """llama-finetune on the configuration (bench/llamacpp_peer.py); `unsupported` with the reason where llama.cpp's
    training cannot run it, `failed` with the reason where its setup or run failed."""
    no_run = {"maxrss_bytes": 0, "wall_s": 0.0}
    reason = llamacpp_peer.unsupported_reason(cfg)
    if reason:
        return {"status": "unsupported", "reason": reason}, no_run
    try:
        cmd, meta, check = args.llamacpp_peer.command(cfg, model_dir, data)
    except llamacpp_peer.SetupError as e:
        return {"status": "failed", "reason": str(e)}, no_run
    r = run_child(cmd, thread_env(cfg["threads"]), str(run_dir / "llamacpp"), args.timeout, args.mem_limit)
    row = {"command": shlex.join(cmd)}
    if r["rc"] != 0:
        row.update(status="failed", reason=failure_reason(r))
        return row, r
    row.update(llamacpp_peer.result_row(r, cfg, meta, check, args))
    return row, r


RUNNERS = {"automodel": run_automodel, "baseline": run_automodel, "llamacpp": run_llamacpp}


def measure(args, cfg, model_dir, data, peak, work, rep=0):
    name = "-".join(str(cfg[k]) for k in ("framework", "shape", "seq", "mode", "dtype")) + \
        f"-t{cfg['threads']}" + ("-ac" if cfg["ac"] else "") + (f"-r{rep + 1}" if rep else "")
    run_dir = work / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    runner = run_torch if is_torch(cfg["framework"]) else RUNNERS[cfg["framework"]]
    row, r = runner(args, cfg, model_dir, data, run_dir)
    row.update(cfg)
    row["peak_rss_mb"] = r["maxrss_bytes"] / 2**20
    row["wall_s"] = r["wall_s"]
    row["log"] = str(run_dir)
    if row["status"] != "ok":
        return row
    steps = row.pop("steps")
    timed = [s for s in steps if s["step"] >= args.warmup_steps]
    # The median step: one stalled step (the VM's second vCPU is shared) moves a mean, not a median.
    seconds = statistics.median(s["seconds"] for s in timed) if timed else 0.0
    row["loss0"] = steps[0]["loss"] if steps else None
    row["loss_last"] = steps[-1]["loss"] if steps else None
    row["tokens_per_step"] = timed[0]["tokens"] if timed else None
    row["tokens_per_s"] = timed[0]["tokens"] / seconds if seconds > 0 else None
    row["step_ms"] = 1e3 * seconds if timed else None
    row["step_ms_max"] = 1e3 * max(s["seconds"] for s in timed) if timed else None
    # What the warm-up steps took beyond timed steps: torch.compile's compilation, mostly.
    row["warmup_extra_s"] = sum(s["seconds"] - seconds for s in steps if s["step"] < args.warmup_steps)
    shape_cfg = common.SHAPES[cfg["shape"]]
    # a runner whose framework computes less than the formula's model FLOPs says how much it computes
    flops = row.pop("flops_per_token", None) or common.train_flops_per_token(shape_cfg, cfg["seq"], cfg["mode"])
    row["gemm_peak"] = peak
    row["mfu"] = row["tokens_per_s"] * flops / (peak * 1e9) if peak and row["tokens_per_s"] else None
    return row


def merge_repeats(runs):
    """One row for the repeated runs of a configuration: the run with the median tokens/s (the lower one of an even
    count), with every run's tokens/s and the largest peak RSS; a failed run makes the row that failure."""
    failed = [r for r in runs if r["status"] != "ok"]
    if failed or len(runs) == 1:
        return failed[0] if failed else runs[0]
    median = dict(sorted(runs, key=lambda r: r["tokens_per_s"] or 0.0)[(len(runs) - 1) // 2])
    median["repeat_tokens_per_s"] = [r["tokens_per_s"] for r in runs]
    median["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return median


# ---- report ----------------------------------------------------------------------------------------------------------

COLUMNS = ["shape", "seq", "mode", "dtype", "ac", "threads", "framework", "tokens/s", "step ms (max)", "peak RSS MB",
           "MFU", "loss@0", "vs torch best", "warm-up s", "status"]


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def expected_trainable(r):
    counts = common.param_counts(common.SHAPES[r["shape"]])
    return counts["total"] if r["mode"] == "full" else counts["lora"]


def tokens_per_s(r):
    runs = r.get("repeat_tokens_per_s")
    return fmt(r.get("tokens_per_s"), ".1f") + (f" [{min(runs):.1f}–{max(runs):.1f}]" if runs else "")


def step_ms(r):
    return fmt(r.get("step_ms"), ".0f") + (f" ({r['step_ms_max']:.0f})" if r.get("step_ms_max") else "")


def table_rows(rows, args_torch_bf16):
    best = {}
    for r in rows:
        if is_torch(r["framework"]) and r.get("tokens_per_s"):
            k = (r["shape"], r["seq"], r["mode"], r["dtype"], r["ac"])
            best[k] = max(best.get(k, 0), r["tokens_per_s"])
    torch_loss0 = {(r["shape"], r["seq"], r["mode"], r["dtype"], r["ac"], r["threads"]): r["loss0"]
                   for r in rows if r["framework"] == "torch" and r.get("loss0") is not None}
    out = []
    for r in rows:
        k = (r["shape"], r["seq"], r["mode"], r["dtype"], r["ac"])
        ratio = None
        if not is_torch(r["framework"]) and r.get("tokens_per_s") and best.get(k):
            ratio = r["tokens_per_s"] / best[k]
        status = r["status"]
        if r["status"] == "unsupported":
            status += f" ({r['reason']})" if r["framework"] == "llamacpp" else " (automodel rejects the peft: section)"
        elif r["status"] != "ok":
            status += f": {r.get('reason', '')[:100]}"
        elif r["framework"] != "llamacpp" and r.get("trainable_params") not in (None, expected_trainable(r)):
            # (llama.cpp's count differs by design: its notes say which tensors it leaves frozen)
            status += f" (trains {r['trainable_params']} parameters, expected {expected_trainable(r)})"
        elif not is_torch(r["framework"]) and r.get("loss0") is not None and \
                abs(r["loss0"] - torch_loss0.get(k + (r["threads"],), r["loss0"])) > \
                (1e-4 if r["dtype"] == "fp32" else 2e-2) * abs(r["loss0"]):
            status += f" (loss@0 differs from PyTorch's {torch_loss0[k + (r['threads'],)]:.5f})"
        elif is_torch(r["framework"]) and r["dtype"] == "bf16" and torch_variant(r["framework"], args_torch_bf16)[1] == "cast":
            weights = r.get("trainable_dtypes" if r["mode"] == "full" else "frozen_dtypes")
            if weights != ["bfloat16"]:
                status += f" (model weights are {weights}, not bf16)"
        if r["status"] == "ok" and r.get("tokens_per_step") != r["batch"] * r["seq"]:
            status += f" (trained {r.get('tokens_per_step')} tokens/step, expected {r['batch'] * r['seq']})"
        if r.get("notes"):
            status += f" ({'; '.join(r['notes'])})"
        out.append([r["shape"], str(r["seq"]), r["mode"], r["dtype"], "on" if r["ac"] else "off", str(r["threads"]),
                    r["framework"], tokens_per_s(r), step_ms(r),
                    fmt(r.get("peak_rss_mb") if r["status"] == "ok" else None, ".0f"),
                    fmt(100 * r["mfu"] if r.get("mfu") else None, ".1f") + ("%" if r.get("mfu") else ""),
                    fmt(r.get("loss0"), ".5f"), fmt(ratio, ".2f") + ("×" if ratio else ""),
                    fmt(r.get("warmup_extra_s"), ".0f"), status])
    return out


def summary_table(rows):
    """Per shape / seq / mode / ac: automodel's fastest configuration against PyTorch's fastest (any dtype, any
    thread count): the tokens/s ratio and the ratio of those two configurations' peak RSS; with llamacpp rows, the
    same against llama.cpp's fastest. Returns (header, rows)."""
    groups = {}
    for r in rows:
        if r.get("tokens_per_s"):
            family = "torch" if is_torch(r["framework"]) else r["framework"]
            groups.setdefault((r["shape"], r["seq"], r["mode"], r["ac"]), {}).setdefault(family, []).append(r)
    with_llamacpp = any("llamacpp" in by for by in groups.values())
    out = []
    for (shape, seq, mode, ac), by in groups.items():
        if "automodel" not in by or "torch" not in by:
            continue
        a = max(by["automodel"], key=lambda r: r["tokens_per_s"])
        t = max(by["torch"], key=lambda r: r["tokens_per_s"])
        row = [shape, str(seq), mode, "on" if ac else "off",
               f"{a['tokens_per_s']:.1f} ({a['dtype']}, {a['threads']}t)",
               f"{t['tokens_per_s']:.1f} ({t['framework']}, {t['dtype']}, {t['threads']}t)",
               f"{a['tokens_per_s'] / t['tokens_per_s']:.2f}×",
               f"{a['peak_rss_mb']:.0f} / {t['peak_rss_mb']:.0f} = {a['peak_rss_mb'] / t['peak_rss_mb']:.2f}×"]
        if with_llamacpp:
            lc = max(by["llamacpp"], key=lambda r: r["tokens_per_s"]) if "llamacpp" in by else None
            row += [f"{lc['tokens_per_s']:.1f} ({lc['dtype']}, {lc['threads']}t)" if lc else "—",
                    f"{a['tokens_per_s'] / lc['tokens_per_s']:.2f}×" if lc else "—",
                    f"{a['peak_rss_mb']:.0f} / {lc['peak_rss_mb']:.0f} = {a['peak_rss_mb'] / lc['peak_rss_mb']:.2f}×"
                    if lc else "—"]
        out.append(row)
    return (SUMMARY_COLUMNS + (LLAMACPP_SUMMARY_COLUMNS if with_llamacpp else []), out)


def baseline_rows(rows):
    """Per configuration run by both builds: automodel's tokens/s over the baseline binary's, and their first losses
    (the same computation should give the same loss)."""
    key = lambda r: (r["shape"], r["seq"], r["mode"], r["dtype"], r["ac"], r["threads"])  # noqa: E731
    base = {key(r): r for r in rows if r["framework"] == "baseline" and r.get("tokens_per_s")}
    out = []
    for r in rows:
        b = base.get(key(r))
        if r["framework"] == "automodel" and r.get("tokens_per_s") and b:
            out.append([r["shape"], str(r["seq"]), r["mode"], r["dtype"], "on" if r["ac"] else "off",
                        str(r["threads"]), tokens_per_s(r), tokens_per_s(b),
                        f"{r['tokens_per_s'] / b['tokens_per_s']:.3f}×",
                        f"{r['peak_rss_mb']:.0f} / {b['peak_rss_mb']:.0f}",
                        "same" if r["loss0"] == b["loss0"] else f"{r['loss0']:.6f} / {b['loss0']:.6f}"])
    return out


BASELINE_COLUMNS = ["shape", "seq", "mode", "dtype", "ac", "threads", "automodel tok/s", "baseline tok/s",
                    "automodel / baseline", "peak RSS MB", "loss@0"]


SUMMARY_COLUMNS = ["shape", "seq", "mode", "ac", "automodel best tok/s", "torch best tok/s", "speed ratio",
                   "peak RSS automodel / torch"]
LLAMACPP_SUMMARY_COLUMNS = ["llama.cpp best tok/s", "automodel / llama.cpp", "peak RSS automodel / llama.cpp"]


def text_table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def md_table(header, rows):
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] +
                     ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows])


def notes(args):
    bf16_torch = ("`model.to(torch.bfloat16)`: weights, gradients and AdamW state in bf16 (no fp32 master copy; "
                  "peft keeps LoRA adapters in fp32)"
                  if args.torch_bf16 == "cast" else
                  "fp32 weights and AdamW state, forward under `torch.autocast('cpu', dtype=torch.bfloat16)`")
    return [
        f"Every configuration runs in its own process; peak RSS is that process's `ru_maxrss` (os.wait4). "
        f"Batch {args.batch}; {args.warmup_steps} warmup step(s) then {args.steps} timed step(s); tokens/s = tokens "
        f"per step / the median timed step's seconds (step ms: that median, the slowest timed step in parentheses); "
        f"AdamW lr {args.lr:g}, betas {tuple(args.betas)}, eps {args.eps:g}, "
        f"weight decay {args.weight_decay:g}, constant lr, no gradient clipping on the PyTorch side "
        f"(automodel computes the gradient norm without clipping).",
        "dtype bf16 — automodel: `model.torch_dtype: bfloat16` (its mixed precision); PyTorch: " + bf16_torch + ".",
        f"PyTorch: transformers `attn_implementation={args.torch_attn}`, loss by transformers' ForCausalLMLoss "
        "(full-vocab logits, upcast to fp32); LoRA by peft `LoraConfig(r=8, lora_alpha=32, lora_dropout=0, "
        "target_modules=[q,k,v,o,gate,up,down]_proj)`; automodel: `peft: {_target_: " + PEFT_TARGET +
        ", target_modules: ['*_proj'], dim: 8, alpha: 32}`.",
        "Threads: `--threads N` (automodel) / `torch.set_num_threads(N)`; both children also get OMP_NUM_THREADS, "
        "MKL_NUM_THREADS, OPENBLAS_NUM_THREADS = N.",
        *([f"Each configuration ran {args.repeats} times, automodel and PyTorch in turn, so that the VM's drift "
           "reaches both alike; a row is its median run (tokens/s of the run with the median tokens/s, and that "
           "run's step time and MFU), the brackets the range of the runs' tokens/s, peak RSS the largest of them. "
           "The GEMM peak is measured again before each round of the two frameworks' runs, and a run's MFU divides "
           "by its round's peak."]
          if args.repeats > 1 else []),
        "MFU = tokens/s × model FLOPs per token / the GEMM peak of that dtype at that thread count (bench/README.md "
        "gives the FLOP formula); the peak is the larger of torch.matmul's and automodel_bench's square GEMM.",
        "PyTorch variants: `torch` eager; `torch-autocast` eager with bf16 autocast over fp32 weights and AdamW "
        "state; `torch-compile` / `torch-compile-max` the model under `torch.compile` (Inductor; mode default / "
        "max-autotune), also with `-autocast`. `warm-up s`: what the warm-up steps took beyond timed steps (for "
        "compiled rows their compilation), left out of tokens/s.",
        "`vs torch best`: automodel tokens/s over PyTorch's fastest variant and thread count for the same shape, seq, "
        "mode, dtype and activation checkpointing. `loss@0` is the loss of the first step (same weights, same token ids: "
        "the two sides should agree closely).",
        *([llamacpp_note(args)] if "llamacpp" in args.frameworks else []),
    ]


def llamacpp_note(args):
    return (f"llamacpp: llama.cpp's `llama-finetune` (ggml-opt, CPU backend, llama-cpp-python "
            f"{llamacpp_peer.LLAMA_CPP_PYTHON}'s vendored llama.cpp unless --llamacpp-src) on an f32 GGUF converted "
            "from the same model directory, context = seq, `-b` = `-ub` = seq, `-t`/`-tb` = threads, AdamW with the "
            f"same lr and weight decay (betas {llamacpp_peer.FIXED_BETAS}, eps {llamacpp_peer.FIXED_EPS:g}: fixed in "
            "llama.cpp), constant lr, one epoch. It differs in what it computes: it trains one sequence per optimizer "
            "step (batch 1); it never trains the token embedding (nor a tied LM head, the same tensor); its data are "
            "windows of seq tokens taken every seq/2 tokens of one token stream (the samples joined), so only step 0 "
            "trains the same ids as the other rows (its loss@0 is comparable, later steps are other windows of the "
            "same text); no LoRA, f32 only, no activation checkpointing (those rows read `unsupported`). Steps are "
            "timed between llama.cpp's per-step log lines (microsecond timestamps); MFU counts its model FLOPs "
            "without the frozen LM head's weight gradient (6·N − 2·V·H per token plus attention). bench/README.md "
            "has the details.")


def report(args, rows, peaks, round_peaks, env, machine, am_info, started):
    head = [f"date: {started}", f"command: python bench/train_compare.py {shlex.join(args.argv)}",
            f"machine: {machine['cpu']}, {machine['cpus']} CPUs ({machine['isa']}), {machine['mem_gib']} GiB, "
            f"Linux {machine['kernel']}",
            f"automodel: commit {am_info['commit']}, binary {am_info['binary']} (built {am_info['binary_built']})"
            + (f"; baseline binary {args.baseline_bin}" if args.baseline_bin else ""),
            "python stack: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()) +
            (f"; torch CPU capability {env.get('torch_cpu_capability')}" if env else "")]
    def peak_row(d, t, when, e):
        return [d, str(t), when, fmt(e.get("torch"), ".1f"), fmt(e.get("automodel"), ".1f"), fmt(e.get("peak"), ".1f")]
    peak_rows = [peak_row(d, t, "start", e) for (d, t), e in sorted(peaks.items())]
    peak_rows += [peak_row(e["dtype"], e["threads"], f"before {e['shape']} {e['seq']} {e['mode']}"
                           f"{' ac' if e['ac'] else ''} run {e['run']}", e) for e in round_peaks]
    peak_header = ["dtype", "threads", "measured", "torch.matmul GFLOP/s", "automodel_bench GFLOP/s", "peak"]
    return (head, (peak_header, peak_rows), (COLUMNS, table_rows(rows, args.torch_bf16)),
            summary_table(rows), (BASELINE_COLUMNS, baseline_rows(rows)))


def write_markdown(path, args, parts):
    head, peaks, table, summary, baseline = parts
    text = ["## Training: automodel vs PyTorch + transformers", ""] + [f"- {h}" for h in head] + [""]
    text += [f"GEMM peak ({args.gemm_n}³):", "", md_table(*peaks), "", md_table(*table), ""]
    if summary[1]:
        text += ["Best against best:", "", md_table(*summary), ""]
    if baseline[1]:
        text += ["Against the baseline binary:", "", md_table(*baseline), ""]
    text += ["Notes:", ""] + [f"- {n}" for n in notes(args)] + [""]
    pathlib.Path(path).write_text("\n".join(text))


# ---- main ------------------------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    work = pathlib.Path(args.work_dir)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    if args.mem_limit_gb is None:
        args.mem_limit = int(0.9 * meminfo_bytes("MemAvailable"))
    else:
        args.mem_limit = int(args.mem_limit_gb * 2**30)
    if "automodel" in args.frameworks and not os.path.exists(args.automodel_bin):
        sys.exit(f"no automodel binary at {args.automodel_bin}: build it (make automodel_cli) or pass --automodel-bin")

    machine, am_info = machine_info(), automodel_info(args)
    env, _ = torch_json(args, "env", [], str(work / "logs" / "env"), timeout=300)
    env = env or {}
    model_dirs, data = prepare_assets(args, work)
    if "llamacpp" in args.frameworks:  # the source and build, once per --llamacpp-dir
        args.llamacpp_peer = llamacpp_peer.Peer(args, work)
        if args.llamacpp_peer.error:
            print(f"llamacpp: {args.llamacpp_peer.error}", flush=True)
    peaks = gemm_peaks(args, work)

    out_json = pathlib.Path(args.json or work / "results" / "latest.json")
    out_json.parent.mkdir(parents=True, exist_ok=True)

    def save(rows):  # after every configuration, so an interrupted run keeps what it measured
        out_json.write_text(json.dumps(
            {"date": started, "machine": machine, "automodel": am_info, "env": env, "argv": args.argv,
             "gemm_peaks": [{"dtype": d, "threads": t, **e} for (d, t), e in peaks.items()],
             "round_gemm_peaks": round_peaks, "rows": rows},
            indent=1))

    acs = {"off": [False], "on": [True], "both": [False, True]}[args.activation_checkpointing]
    rows, round_peaks = [], []
    for shape, seq, mode, dtype, ac, threads in itertools.product(args.shapes, args.seqs, args.modes, args.dtypes, acs,
                                                                  args.threads):
        runs = {framework: [] for framework in args.frameworks}
        for rep in range(args.repeats):
            # Repeated runs measure the peak again before each round, so a run's MFU divides by the peak of its own
            # minutes of the VM's drift (both frameworks of a round share it).
            peak = peaks.get((dtype, threads), {}).get("peak")
            if args.repeats > 1:
                entry = gemm_peak(args, work, dtype, threads, f"-{shape}-{seq}-{mode}{'-ac' if ac else ''}-r{rep + 1}")
                round_peaks.append({"dtype": dtype, "threads": threads, "shape": shape, "seq": seq, "mode": mode,
                                    "ac": ac, "run": rep + 1, **entry})
                peak = entry["peak"]
            for framework in args.frameworks:
                if dtype == "fp32" and framework.endswith("-autocast"):
                    continue  # autocast is a bf16 variant
                cfg = dict(shape=shape, seq=seq, mode=mode, dtype=dtype, ac=ac, threads=threads, framework=framework,
                           batch=args.batch)
                print(f"{framework:9s} {shape} seq {seq} {mode} {dtype} ac {'on' if ac else 'off'} {threads} thread(s)"
                      + (f" run {rep + 1}/{args.repeats}" if args.repeats > 1 else "") + " ...", end=" ", flush=True)
                row = measure(args, cfg, model_dirs[shape], data[seq], peak, work, rep)
                runs[framework].append(row)
                if row["status"] == "ok":
                    print(f"{row['tokens_per_s']:.1f} tok/s, {row['peak_rss_mb']:.0f} MB, loss@0 {row['loss0']:.5f}",
                          flush=True)
                else:
                    print(f"{row['status']}: {row.get('reason')}", flush=True)
        rows += [merge_repeats(runs[framework]) for framework in args.frameworks if runs[framework]]
        save(rows)

    parts = report(args, rows, peaks, round_peaks, env, machine, am_info, started)
    head, peak_tab, table, summary, baseline = parts
    print()
    print("\n".join(head))
    print()
    print(text_table(*peak_tab))
    print()
    print(text_table(*table))
    if summary[1]:
        print()
        print(text_table(*summary))
    if baseline[1]:
        print()
        print(text_table(*baseline))
    if args.markdown:
        write_markdown(args.markdown, args, parts)
        print(f"\nwrote {args.markdown}")
    print(f"measurements: {out_json}")


if __name__ == "__main__":
    main()
