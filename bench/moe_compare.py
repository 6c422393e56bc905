#!/usr/bin/env python3
"""Mixture-of-experts training, automodel against PyTorch + transformers (+ peft), side by side: a Qwen3-MoE-shaped
model scaled to this machine (16 experts, top-4, every layer sparse, output_router_logits on, so both train with the
router's load-balancing loss), full fine-tuning and LoRA on the attention projections, fp32 and bf16. Each
configuration runs in its own process (bench/train_compare.py's harness: same token ids, AdamW settings and steps);
PyTorch eager and torch.compile'd (its compile time is in the warm-up step, left out of the timing); prints
tokens/s, median step time, peak RSS and loss@step0 (equal on both sides up to rounding: the same model, data
and aux loss).

  python bench/moe_compare.py --quick
  python bench/moe_compare.py --seq 512 --threads 2 --steps 6
"""
import argparse
import json
import pathlib
import shutil
import statistics
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import train_compare as tc  # noqa: E402

# Qwen3-30B-A3B's shape (48 layers, hidden 2048, 128 experts of 768, top-8) scaled down.
MOE_SHAPE = dict(hidden_size=512, intermediate_size=1024, moe_intermediate_size=256, num_hidden_layers=4,
                 num_attention_heads=8, num_key_value_heads=4, head_dim=64, num_experts=16, num_experts_per_tok=4,
                 norm_topk_prob=True, vocab_size=4096, tie_word_embeddings=False, max_position_embeddings=4096,
                 rms_norm_eps=1e-6, output_router_logits=True, router_aux_loss_coef=0.001,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
QUICK_SHAPE = dict(MOE_SHAPE, hidden_size=128, intermediate_size=256, moe_intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=2048)
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def model_dir(work, shape, name):
    """The tokenizer of train_compare and a random Qwen3-MoE directory written by transformers."""
    d = work / "models" / name
    if (d / "config.json").exists():
        return d
    import torch
    import transformers

    import train_torch
    tok_dir = work / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        train_torch.make_tokenizer(tok_dir)
    tok = json.loads((tok_dir / "tokenizer.json").read_text())["added_tokens"]
    ids = {t["content"]: t["id"] for t in tok}
    config = transformers.Qwen3MoeConfig(**shape, bos_token_id=ids["<|begin_of_text|>"],
                                         eos_token_id=ids["<|end_of_text|>"], pad_token_id=ids["<|pad|>"])
    torch.manual_seed(0)
    tmp = d.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(tmp)
    for f in tok_dir.iterdir():
        shutil.copy(f, tmp / f.name)
    tmp.rename(d)
    return d


def measure(args, cfg, directory, data, work):
    name = "-".join(str(cfg[k]) for k in ("framework", "seq", "mode", "dtype")) + f"-t{cfg['threads']}"
    run_dir = work / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    if tc.is_torch(cfg["framework"]):
        extra = tc.torch_train_args(args, cfg, str(directory), data, args.batch)
        if cfg["mode"] == "lora":
            extra += ["--lora-targets", ",".join(ATTENTION)]
        res, r = tc.torch_json(args, "train", extra, str(run_dir / "torch"), threads=cfg["threads"])
        row = {"status": "ok" if res else "failed", "steps": res["steps"] if res else []}
        if res:
            row["trainable_params"] = res["trainable_params"]
        else:
            row["reason"] = tc.failure_reason(r)
    else:  # the recipe's LoRA targets '*_proj': the attention projections (the experts are grouped parameters)
        row, r = tc.run_automodel(args, cfg, str(directory), data, run_dir)
        row.setdefault("steps", [])
    row["peak_rss_mb"] = r["maxrss_bytes"] / 2**20
    timed = [s for s in row.get("steps", []) if s["step"] >= args.warmup_steps]
    if row["status"] == "ok" and timed:
        seconds = statistics.median(s["seconds"] for s in timed)
        row.update(tokens_per_s=timed[0]["tokens"] / seconds, step_ms=1e3 * seconds, loss0=row["steps"][0]["loss"])
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--modes", default="full,lora")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--frameworks", default="automodel,torch,torch-compile",
                   help="automodel and PyTorch's variants: " + ", ".join(tc.TORCH_FRAMEWORKS) +
                   " (-autocast ones run for bf16 only)")
    p.add_argument("--quick", action="store_true", help="a tiny shape, seq 128, 2 + 1 steps: plumbing check")
    p.add_argument("--work-dir", default="/tmp/automodel_moe_bench")
    p.add_argument("--automodel-bin", default=str(tc.REPO / "build" / "automodel"))
    p.add_argument("--json", help="also write every measurement to this file")
    a = p.parse_args(argv)
    if a.quick:
        a.seq, a.batch, a.steps, a.warmup_steps = 128, 2, 2, 1
    # train_compare's options for the runs (its defaults: AdamW lr 1e-4, betas 0.9/0.999, eps 1e-8, wd 0.01).
    args = tc.parse_args(["--batch", str(a.batch), "--steps", str(a.steps), "--warmup-steps", str(a.warmup_steps),
                          "--automodel-bin", a.automodel_bin, "--work-dir", a.work_dir])
    args.mem_limit = int(0.9 * tc.meminfo_bytes("MemAvailable"))
    work = pathlib.Path(a.work_dir)
    (work / "data").mkdir(parents=True, exist_ok=True)
    shape, shape_name = (QUICK_SHAPE, "qwen3-moe-quick") if a.quick else (MOE_SHAPE, "qwen3-moe-16x4")
    directory = model_dir(work, shape, shape_name)
    data = work / "data" / f"seq{a.seq}_n{a.batch * (a.steps + a.warmup_steps)}.jsonl"
    if not data.exists():
        tc.common.write_data(data, a.seq, a.batch * (a.steps + a.warmup_steps))
    rows = []
    print(f"{shape_name}: {shape['num_experts']} experts, top {shape['num_experts_per_tok']}, "
          f"{shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}; seq {a.seq}, batch {a.batch}, "
          f"{a.threads} thread(s), {a.steps} timed step(s)")
    print(f"{'framework':24s}{'mode':6s}{'dtype':6s}{'tokens/s':>10s}{'step ms':>10s}{'peak RSS MB':>13s}"
          f"{'loss@0':>10s}{'trainable':>12s}")
    for mode in a.modes.split(","):
        for dtype in a.dtypes.split(","):
            for framework in a.frameworks.split(","):
                if framework.endswith("-autocast") and dtype != "bf16":
                    continue
                cfg = dict(shape=shape_name, seq=a.seq, mode=mode, dtype=dtype, ac=False, threads=a.threads,
                           framework=framework, batch=a.batch)
                row = {**cfg, **measure(args, cfg, directory, str(data), work)}
                rows.append(row)
                if row["status"] != "ok":
                    print(f"{framework:24s}{mode:6s}{dtype:6s}  {row['status']}: {row.get('reason', '')}")
                    continue
                print(f"{framework:24s}{mode:6s}{dtype:6s}{row['tokens_per_s']:10.0f}{row['step_ms']:10.0f}"
                      f"{row['peak_rss_mb']:13.0f}{row['loss0']:10.4f}{row.get('trainable_params') or 0:12d}",
                      flush=True)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "steps"} for r in rows],
                                                   indent=1))


if __name__ == "__main__":
    main()
