#!/usr/bin/env python3
"""The weak-scaling model of docs/scaling.md: predicted step time and efficiency of DDP and FSDP2 full fine-tuning
on N CPU ranks from a per-core compute rate, a network bandwidth and latency, and the share of the gradient
communication that backward hides. Takes the measured rate and hidden share from a bench/dp_compare.py JSON
(--measured) or from --core-gflops / --hidden; everything else is an assumption given on the command line.

  python bench/scaling_model.py --measured /tmp/dp.json --markdown
"""
import argparse
import json
import math
import pathlib
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import train_common as common  # noqa: E402

# Bytes of training state per parameter, automodel's AdamW: bf16 weights (2) + bf16 gradients (2) + fp32 master
# weights (4) + fp32 exp_avg and exp_avg_sq (8) = 16; fp32 training: 4 + 4 + 8 = 16 as well.
STATE_BYTES = 16
# Bytes AdamW moves per parameter and step: reads master, m, v (12) and the gradient, writes master, m, v (12) and
# the bf16 weights; fp32 gradient and weights are 2 bytes more each way. Memory-bound on CPUs.
OPT_BYTES = {"bf16": 28, "fp32": 32}


def measured_inputs(path):
    """(per-core model GFLOP/s, hidden share) from a dp_compare JSON's full-fine-tune rows: the compute rate of one
    rank of `automodel N×1 ddp` (one thread each) without the wait for the all-reduce, i.e. model FLOPs of its local
    tokens / (median step − median wait), and 1 − wait(overlap) / wait(no overlap)."""
    rows = json.loads(pathlib.Path(path).read_text())["rows"]
    by = {r["name"]: r for r in rows if r["status"] == "ok" and r["mode"] == "full"}
    ddp, no_overlap = by["am-ddp"], by["am-ddp-nooverlap"]
    flops = common.train_flops_per_token(common.SHAPES[ddp["shape"]], ddp["seq"], "full")
    wait = statistics.median(ddp["wait_seconds"])
    compute = statistics.median(ddp["step_seconds"]) - wait
    core = flops * ddp["tokens_per_step"] / ddp["ranks"] / compute / ddp["threads"] / 1e9
    return core, 1 - wait / statistics.median(no_overlap["wait_seconds"])


def exposed(comm, window, hidden):
    """Communication that overlaps a compute window of `window` seconds: `hidden` of it is hidden while it fits,
    none of what is longer than the window."""
    return max((1 - hidden) * comm, comm - window)


def predict(shape, n, a):
    cfg = common.SHAPES[shape]
    params = common.param_counts(cfg)["total"]
    layers = cfg["num_hidden_layers"]
    gbytes = params * (2 if a.grad_dtype == "bf16" else 4)
    rate = a.core_gflops * 1e9 * a.cores_per_rank
    compute = common.train_flops_per_token(cfg, a.seq, "full") * a.tokens_per_rank / rate
    fwd, bwd = compute / 3, 2 * compute / 3
    opt = params * OPT_BYTES[a.grad_dtype] / (a.mem_bw_gbs * 1e9)
    bw, lat = a.bw_gbit * 1e9 / 8, a.latency_us * 1e-6
    # DDP: ring all-reduce of the gradients, one per bucket; every rank steps AdamW on all parameters.
    buckets = math.ceil(gbytes / (a.bucket_mb * 2**20))
    ddp_comm = 2 * (n - 1) / n * gbytes / bw + buckets * 2 * (n - 1) * lat
    ddp_step = compute + exposed(ddp_comm, bwd, a.hidden) + opt
    # FSDP2: per layer, all-gather the weights (compute dtype) for forward and again for backward, reduce-scatter the
    # gradients; the forward gathers hide under forward, the backward ones under backward; AdamW on 1/N.
    pbytes = params * (2 if a.grad_dtype == "bf16" else 4)
    ag = (n - 1) / n * pbytes / bw + (layers + 1) * (n - 1) * lat
    rs = (n - 1) / n * gbytes / bw + (layers + 1) * (n - 1) * lat
    fsdp_step = compute + exposed(ag, fwd, a.hidden) + exposed(ag + rs, bwd, a.hidden) + opt / n
    # Efficiency: the share of the step that is not waiting for the network (FSDP2's sharded AdamW is not counted
    # as a gain, so both stay <= 100%).
    layer_params = (params - cfg["vocab_size"] * cfg["hidden_size"]) / layers
    return dict(shape=shape, n=n, compute=compute, opt=opt, ddp_comm=ddp_comm, ddp_step=ddp_step,
                ddp_eff=(compute + opt) / ddp_step, fsdp_comm=2 * ag + rs, fsdp_step=fsdp_step,
                fsdp_eff=(compute + opt / n) / fsdp_step,
                ddp_mem=params * STATE_BYTES / 1e9,
                # sharded state + two gathered layers (the one computing, the one prefetched) in the compute dtype
                fsdp_mem=(params * STATE_BYTES / n + 2 * layer_params * pbytes / params) / 1e9)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--measured", help="bench/dp_compare.py JSON with the automodel full rows")
    p.add_argument("--core-gflops", type=float, help="model GFLOP/s of one core (default: from --measured)")
    p.add_argument("--hidden", type=float, help="share of the gradient communication backward hides "
                   "(default: from --measured)")
    p.add_argument("--cores-per-rank", type=int, default=32, help="a rank is one node (socket) of this many cores")
    p.add_argument("--tokens-per-rank", type=int, default=4096, help="tokens of each rank per step (weak scaling)")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--bw-gbit", type=float, nargs="+", default=[25, 100], help="network bandwidth per rank, Gb/s")
    p.add_argument("--latency-us", type=float, default=50, help="latency of one message, µs")
    p.add_argument("--bucket-mb", type=float, default=25)
    p.add_argument("--mem-bw-gbs", type=float, default=100, help="memory bandwidth of a rank, GB/s (AdamW step)")
    p.add_argument("--ram-gb", type=float, default=128, help="memory of a rank; DDP rows whose state alone does not "
                   "fit are marked")
    p.add_argument("--grad-dtype", choices=["bf16", "fp32"], nargs="+", default=["bf16", "fp32"])
    p.add_argument("--ranks", type=int, nargs="+", default=[8, 64, 512])
    p.add_argument("--shapes", nargs="+", default=["llama-3.2-1b", "llama-3.1-8b"])
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args()
    core, hidden = measured_inputs(a.measured) if a.measured else (None, None)
    a.core_gflops = a.core_gflops or core
    a.hidden = a.hidden if a.hidden is not None else hidden
    if a.core_gflops is None or a.hidden is None:
        p.error("give --measured or both --core-gflops and --hidden")
    a.hidden = min(max(a.hidden, 0.0), 1.0)
    print(f"per-core rate {a.core_gflops:.1f} GFLOP/s × {a.cores_per_rank} cores; hidden share {a.hidden:.2f}; "
          f"{a.tokens_per_rank} tokens per rank per step at seq {a.seq}; latency {a.latency_us:g} µs; buckets "
          f"{a.bucket_mb:g} MB; memory bandwidth {a.mem_bw_gbs:g} GB/s; ✗: DDP state > {a.ram_gb:g} GB of RAM")
    header = ["shape", "grads", "Gb/s", "N", "compute s", "AdamW s", "DDP comm s", "DDP step s", "DDP eff",
              "FSDP2 comm s", "FSDP2 step s", "FSDP2 eff", "state GB/rank DDP", "FSDP2"]
    rows = []
    for shape in a.shapes:
        for gd in a.grad_dtype:
            for bw in a.bw_gbit:
                for n in a.ranks:
                    r = predict(shape, n, argparse.Namespace(**{**vars(a), "grad_dtype": gd, "bw_gbit": bw}))
                    rows.append([shape, gd, f"{bw:g}", str(n), f"{r['compute']:.2f}", f"{r['opt']:.2f}",
                                 f"{r['ddp_comm']:.2f}", f"{r['ddp_step']:.2f}" + (" ✗" if r["ddp_mem"] > a.ram_gb
                                                                                    else ""),
                                 f"{100 * r['ddp_eff']:.0f}%",
                                 f"{r['fsdp_comm']:.2f}", f"{r['fsdp_step']:.2f}", f"{100 * r['fsdp_eff']:.0f}%",
                                 f"{r['ddp_mem']:.1f}", f"{r['fsdp_mem']:.2f}"])
    if a.markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        print("\n".join("| " + " | ".join(r) + " |" for r in rows))
    else:
        widths = [max(len(x) for x in col) for col in zip(header, *rows)]
        for r in [header] + rows:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
