#!/usr/bin/env python3
"""Image-text fine-tuning, automodel against PyTorch + transformers (+ torch.compile, + peft), side by side: a
Gemma3ForConditionalGeneration with Gemma-3-4B's vision tower (SigLIP so400m: 27 layers, hidden 1152, 896x896 images
in 14x14 patches = 4096 patches, pooled to 256 soft tokens) and a small Gemma 3 decoder (Gemma-3-270M's width, 6
layers), random weights written by transformers. Each step trains on a batch of conversations with one image each from
assets/tiny-vlm-data, as NeMo Automodel's VLM recipe does: embeddings and vision tower frozen (freeze_config
defaults), loss on the answers. Each configuration runs in its own process (bench/train_compare.py's harness: same
AdamW settings, same conversations in the same order); prints tokens/s (every non-padding token, image tokens
included), median step time, peak RSS and loss@step0 (equal on both sides up to rounding).

Both sides time the whole step, the collate (image decoding and processing) included.

  python bench/vlm_compare.py --quick
  python bench/vlm_compare.py --batch 2 --steps 3 --threads 2
"""
import argparse
import json
import pathlib
import re
import shutil
import statistics
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "scripts"))
import train_compare as tc  # noqa: E402

DATA = tc.REPO / "assets" / "tiny-vlm-data"

# google/gemma-3-4b-pt's vision_config and mm_tokens_per_image; the decoder is google/gemma-3-270m's width.
TOWER_4B = dict(patch_size=14, hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                vision_use_head=False)
DECODER_SMALL = dict(hidden_size=640, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=4,
                     num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256, sliding_window=512,
                     max_position_embeddings=32768, layer_types=["sliding_attention"] * 5 + ["full_attention"],
                     rope_parameters=dict(full_attention=dict(rope_type="default", rope_theta=1000000.0),
                                          sliding_attention=dict(rope_type="default", rope_theta=10000.0)))
SHAPES = {"gemma3-4b-tower": (TOWER_4B, DECODER_SMALL, 896, 256)}


def model_dir(work, name):
    """The embedded tiny model for --quick; otherwise the shape written once by scripts/make_tiny_gemma3_vlm.py's
    save_gemma3_vlm (tokenizer, processor and chat template of the tiny model, larger shapes)."""
    if name == "quick":
        return tc.REPO / "assets" / "tiny-gemma3-vlm"
    d = work / "models" / name
    if not (d / "config.json").exists():
        import make_tiny_gemma3_vlm
        vision, text, image_size, tokens = SHAPES[name]
        tmp = d.with_name(f".{name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        make_tiny_gemma3_vlm.save_gemma3_vlm(tmp, text, vision, image_size, tokens)
        tmp.rename(d)
    return d


def automodel_recipe(args, cfg, directory, run_dir):
    lines = [
        "recipe:",
        "  _target_: nemo_automodel.recipes.vlm.finetune.FinetuneRecipeForVLM",
        "step_scheduler:",
        f"  global_batch_size: {args.batch}",
        f"  local_batch_size: {args.batch}",
        f"  max_steps: {args.steps + args.warmup_steps}",
        "  num_epochs: 1",
        "rng:",
        "  seed: 1234",
        "model:",
        "  _target_: nemo_automodel.NeMoAutoModelForImageTextToText.from_pretrained",
        f"  pretrained_model_name_or_path: {json.dumps(str(directory))}",
        f"  torch_dtype: {'bfloat16' if cfg['dtype'] == 'bf16' else 'float32'}",
        "processor:",
        "  _target_: transformers.AutoProcessor.from_pretrained",
        f"  pretrained_model_name_or_path: {json.dumps(str(directory))}",
        "checkpoint:",
        "  enabled: false",
        f"  checkpoint_dir: {json.dumps(str(run_dir))}",
        "dataset:",
        "  _target_: automodel.datasets.vlm.make_conversation_dataset",
        f"  path_or_dataset: {json.dumps(str(DATA))}",
        "  split: train",
        "dataloader:",
        "  _target_: torchdata.stateful_dataloader.StatefulDataLoader",
        "  collate_fn:",
        "    _target_: nemo_automodel.components.datasets.vlm.collate_fns.default_collate_fn",
        "  shuffle: false",
        *tc.optimizer_lines(args),
        "freeze_config:",
        "  freeze_embeddings: true",
        "  freeze_vision_tower: true",
        "  freeze_language_model: false",
    ]
    if cfg["mode"] == "lora":  # NeMo's VLM LoRA: every linear of the decoder
        lines += ["peft:", f"  _target_: {tc.PEFT_TARGET}", "  match_all_linear: false",
                  "  exclude_modules: ['*vision_tower*', '*lm_head*']", f"  dim: {tc.common.LORA_RANK}",
                  f"  alpha: {tc.common.LORA_ALPHA}", "  dropout: 0.0"]
    return "\n".join(lines) + "\n"


def measure(args, cfg, directory, work, rep):
    name = "-".join(str(cfg[k]) for k in ("framework", "mode", "dtype")) + f"-t{cfg['threads']}-r{rep}"
    run_dir = work / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    if tc.is_torch(cfg["framework"]):
        compile_mode, bf16 = tc.torch_variant(cfg["framework"], args.torch_bf16)
        extra = ["--model-dir", str(directory), "--data", str(DATA), "--batch", str(args.batch), "--steps",
                 str(args.steps), "--warmup-steps", str(args.warmup_steps), "--threads", str(cfg["threads"]),
                 "--mode", cfg["mode"], "--dtype", cfg["dtype"], "--bf16", bf16, "--attn", args.torch_attn,
                 "--compile", compile_mode, "--lr", repr(args.lr), "--beta1", repr(args.betas[0]),
                 "--beta2", repr(args.betas[1]), "--eps", repr(args.eps), "--weight-decay", repr(args.weight_decay)]
        res, r = tc.torch_json(args, "train-vlm", extra, str(run_dir / "torch"), threads=cfg["threads"])
        row = {"status": "ok" if res else "failed", "steps": res["steps"] if res else []}
        if res:
            row["trainable_params"] = res["trainable_params"]
        else:
            row["reason"] = tc.failure_reason(r)
    else:
        (run_dir / "recipe.yaml").write_text(automodel_recipe(args, cfg, directory, run_dir))
        cmd = [args.automodel_bin, "finetune", "vlm", "-c", str(run_dir / "recipe.yaml"), "--threads",
               str(cfg["threads"])]
        r = tc.run_child(cmd, tc.thread_env(cfg["threads"]), str(run_dir / "automodel"), args.timeout,
                         args.mem_limit)
        row = {"status": "ok" if r["rc"] == 0 else "failed", "steps": []}
        if r["rc"] == 0:
            logged = [json.loads(x) for x in (run_dir / "training.jsonl").read_text().splitlines() if x.strip()]
            row["steps"] = [{"step": s["step"], "loss": s["loss"], "tokens": s["num_tokens_per_step"],
                             "seconds": s["num_tokens_per_step"] / s["tps"]} for s in logged]
            m = re.search(r"\((\d+) trainable\)", r["stdout"])
            row["trainable_params"] = int(m.group(1)) if m else None
        else:
            row["reason"] = tc.failure_reason(r)
    row["peak_rss_mb"] = r["maxrss_bytes"] / 2**20
    timed = [s for s in row["steps"] if s["step"] >= args.warmup_steps]
    if row["status"] == "ok" and timed:
        seconds = statistics.median(s["seconds"] for s in timed)
        tokens = sum(s["tokens"] for s in timed) / len(timed)
        row.update(tokens_per_s=tokens / seconds, step_ms=1e3 * seconds, loss0=row["steps"][0]["loss"],
                   warmup_extra_s=sum(s["seconds"] - seconds for s in row["steps"] if s["step"] < args.warmup_steps))
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2, help="conversations (one image each) per step")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="runs of each configuration; the row is the median")
    p.add_argument("--modes", default="full,lora")
    p.add_argument("--dtypes", default="bf16")
    p.add_argument("--frameworks", default="automodel,torch,torch-autocast,torch-compile,torch-compile-autocast")
    p.add_argument("--quick", action="store_true", help="the embedded tiny model, 2 + 1 steps: plumbing check")
    p.add_argument("--work-dir", default="/tmp/automodel_vlm_bench")
    p.add_argument("--automodel-bin", default=str(tc.REPO / "build" / "automodel"))
    p.add_argument("--json", help="also write every measurement to this file")
    a = p.parse_args(argv)
    if a.quick:
        a.steps, a.warmup_steps = 2, 1
    args = tc.parse_args(["--batch", str(a.batch), "--steps", str(a.steps), "--warmup-steps", str(a.warmup_steps),
                          "--automodel-bin", a.automodel_bin, "--work-dir", a.work_dir])
    args.mem_limit = int(0.9 * tc.meminfo_bytes("MemAvailable"))
    work = pathlib.Path(a.work_dir)
    shape = "quick" if a.quick else "gemma3-4b-tower"
    directory = model_dir(work, shape)
    config = json.loads((directory / "config.json").read_text())
    v, t = config["vision_config"], config["text_config"]
    print(f"{shape}: vision {v['num_hidden_layers']} layers x {v['hidden_size']} on {v['image_size']}px "
          f"(patch {v['patch_size']}), {config['mm_tokens_per_image']} tokens per image; decoder "
          f"{t['num_hidden_layers']} layers x {t['hidden_size']}; batch {a.batch}, {a.threads} thread(s), "
          f"{a.steps} timed step(s) after {a.warmup_steps}")
    print(f"{'framework':24s}{'mode':6s}{'dtype':6s}{'tokens/s':>10s}{'step ms':>10s}{'peak RSS MB':>13s}"
          f"{'loss@0':>10s}{'warm-up s':>11s}{'trainable':>12s}")
    rows = []
    for mode in a.modes.split(","):
        for dtype in a.dtypes.split(","):
            for framework in a.frameworks.split(","):
                if framework.endswith("-autocast") and dtype != "bf16":
                    continue
                cfg = dict(shape=shape, mode=mode, dtype=dtype, threads=a.threads, framework=framework,
                           batch=a.batch)
                runs = [measure(args, cfg, directory, work, rep) for rep in range(a.repeats)]
                ok = sorted((r for r in runs if r["status"] == "ok"), key=lambda r: r["tokens_per_s"])
                row = {**cfg, **(ok[(len(ok) - 1) // 2] if len(ok) == len(runs) else runs[0])}
                row["tokens_per_s_runs"] = [r.get("tokens_per_s") for r in runs]
                rows.append(row)
                if row["status"] != "ok":
                    print(f"{framework:24s}{mode:6s}{dtype:6s}  {row['status']}: {row.get('reason', '')}")
                    continue
                print(f"{framework:24s}{mode:6s}{dtype:6s}{row['tokens_per_s']:10.1f}{row['step_ms']:10.0f}"
                      f"{row['peak_rss_mb']:13.0f}{row['loss0']:10.4f}{row['warmup_extra_s']:11.1f}"
                      f"{row.get('trainable_params') or 0:12d}", flush=True)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps([{k: v for k, v in r.items() if k != "steps"} for r in rows],
                                                   indent=1))


if __name__ == "__main__":
    main()
