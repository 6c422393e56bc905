"""The PyTorch side of bench/train_compare.py, one subcommand per child process:

  assets   --work-dir D --shape S          the benchmark tokenizer and a random-weight model directory (transformers)
  gemm     --threads T --dtype fp32|bf16    the GEMM peak of torch.matmul at T threads, GFLOP/s
  train    ...                              PyTorch + transformers (+ peft) training steps; per-step loss and time
  train-vlm ...                             the same for an image-text model on conversations with images
  env                                       versions and torch's parallel / BLAS configuration

Each writes one JSON object to --result (or stdout). The harness runs every training configuration in its own
process so that its peak RSS is that configuration's alone."""
import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import train_common as common  # noqa: E402


def emit(obj, result):
    text = json.dumps(obj, indent=1)
    if result:
        pathlib.Path(result).write_text(text)
    else:
        print(text)


# ---- assets ---------------------------------------------------------------------------------------------------------

def make_tokenizer(out_dir):
    """A byte-level BPE trained on the benchmark's synthetic text, BOS prepended as Llama 3's is."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=common.TOKENIZER_VOCAB, special_tokens=common.SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(common.tokenizer_corpus(), trainer)
    bos = tok.token_to_id(common.SPECIAL_TOKENS[0])
    tok.post_processor = processors.TemplateProcessing(single=f"{common.SPECIAL_TOKENS[0]} $A",
                                                       pair=f"{common.SPECIAL_TOKENS[0]} $A $B",
                                                       special_tokens=[(common.SPECIAL_TOKENS[0], bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=common.SPECIAL_TOKENS[0],
                                   eos_token=common.SPECIAL_TOKENS[1], pad_token=common.SPECIAL_TOKENS[2])
    fast.save_pretrained(out_dir)
    return fast


def cmd_assets(args):
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    work = pathlib.Path(args.work_dir)
    tok_dir = work / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        tmp = work / ".tokenizer.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        make_tokenizer(tmp)
        tmp.rename(tok_dir)
    model_dir = work / "models" / args.shape
    if not (model_dir / "config.json").exists():
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
        ids = {t: tok.token_to_id(t) for t in common.SPECIAL_TOKENS}
        shape = common.SHAPES[args.shape]
        assert tok.get_vocab_size() <= shape["vocab_size"], "tokenizer ids must stay below the model's vocab_size"
        config = LlamaConfig(**shape, bos_token_id=ids["<|begin_of_text|>"], eos_token_id=ids["<|end_of_text|>"],
                             pad_token_id=ids["<|pad|>"], hidden_act="silu", attention_bias=False, mlp_bias=False)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(torch.float32)
        tmp = work / "models" / f".{args.shape}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        for f in tok_dir.iterdir():
            shutil.copy(f, tmp / f.name)
        tmp.rename(model_dir)
    emit({"model_dir": str(model_dir)}, args.result)


# ---- GEMM peak -------------------------------------------------------------------------------------------------------

def cmd_gemm(args):
    import torch
    torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    n = args.n
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    c = torch.empty(n, n, dtype=dtype)
    best = float("inf")
    deadline = time.perf_counter() + args.seconds
    reps = 0
    while reps < 3 or (time.perf_counter() < deadline and reps < 50):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
        reps += 1
    emit({"gflops": 2.0 * n ** 3 / best / 1e9, "n": n, "reps": reps, "threads": torch.get_num_threads()}, args.result)


# ---- training --------------------------------------------------------------------------------------------------------

def load_batches(model_dir, data, seq, batch, steps):
    """The token ids the automodel side trains on: the tokenizer's encoding of "{text} {answer}" (BOS first),
    truncated to seq + 1 tokens; inputs are the first seq, labels the last seq (every label counted)."""
    import torch
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(pathlib.Path(model_dir) / "tokenizer.json"))
    records = [json.loads(line) for line in pathlib.Path(data).read_text().splitlines() if line.strip()]
    need = batch * steps
    if len(records) < need:
        raise SystemExit(f"{data} has {len(records)} samples, {need} needed")
    rows = []
    for r in records[:need]:
        ids = tok.encode(common.sample_text(r)).ids
        if len(ids) < seq + 1:
            raise SystemExit(f"a sample has {len(ids)} tokens, fewer than seq + 1 = {seq + 1}")
        rows.append(ids[:seq + 1])
    ids = torch.tensor(rows, dtype=torch.long).view(steps, batch, seq + 1)
    return [(ids[s, :, :-1].contiguous(), ids[s, :, 1:].contiguous()) for s in range(steps)]


def build_model(args):
    """The transformers model of a `train` run (bf16 cast, activation checkpointing and LoRA as asked), in train
    mode; bench/train_torch_dp.py wraps the same model in DDP or FSDP2."""
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, attn_implementation=args.attn)
    if args.dtype == "bf16" and args.bf16 == "cast":
        model = model.to(torch.bfloat16)
    if args.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.mode == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=common.LORA_RANK, lora_alpha=common.LORA_ALPHA, lora_dropout=0.0,
                                                 target_modules=args.lora_targets or common.LORA_TARGETS, bias="none",
                                                 task_type="CAUSAL_LM"))
    model.train()
    if getattr(args, "compile", "none") != "none":
        # Inductor: the forward and (through AOTAutograd) the backward become generated C++/OpenMP kernels; the
        # first steps compile them (the harness leaves warm-up steps out of the timing).
        model = torch.compile(model, mode=args.compile)
    return model


def adamw(args, params):
    import torch
    return torch.optim.AdamW(params, lr=args.lr, betas=(args.beta1, args.beta2), eps=args.eps,
                             weight_decay=args.weight_decay)


def timed_step(model, optimizer, x, y, autocast):
    """One training step on token ids x and shifted labels y; returns (loss, seconds)."""
    import torch
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        # shift_labels: y is already shifted, so transformers' loss takes every position.
        loss = model(input_ids=x, labels=y, shift_labels=y).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()), time.perf_counter() - t0


def dtype_summary(model):
    """The dtypes of the frozen and the trainable parameters and their counts (peft keeps adapters in fp32 over a
    bf16 model: its autocast_adapter_dtype default)."""
    params = list(model.parameters())
    return {"frozen_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in params if not p.requires_grad}),
            "trainable_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in params if p.requires_grad}),
            "trainable_params": sum(p.numel() for p in params if p.requires_grad),
            "total_params": sum(p.numel() for p in params)}


def cmd_train(args):
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    steps = args.warmup_steps + args.steps
    batches = load_batches(args.model_dir, args.data, args.seq, args.batch, steps)
    model = build_model(args)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(args, params)
    autocast = args.dtype == "bf16" and args.bf16 == "autocast"

    records = []
    for step, (x, y) in enumerate(batches):
        loss, seconds = timed_step(model, optimizer, x, y, autocast)
        records.append({"step": step, "loss": loss, "seconds": seconds, "tokens": int(y.numel())})
        print(f"step {step} loss {records[-1]['loss']:.5f} {seconds * 1e3:.0f} ms", flush=True)
    emit({"steps": records, "threads": torch.get_num_threads(), **dtype_summary(model)}, args.result)


# ---- image-text training ---------------------------------------------------------------------------------------------

def load_processor(model_dir):
    """AutoProcessor of an image-text model directory. ProcessorMixin checks the tokenizer against every tokenizer
    class transformers knows, importing each; where an optional backend cannot be imported (mistral_common without
    jsonschema) a stand-in class lets that check pass."""
    import transformers
    import transformers.processing_utils as pu
    try:
        pu.transformers_module.MistralCommonBackend  # noqa: B018 - raises when its import fails
    except ImportError:
        setattr(pu.transformers_module, "MistralCommonBackend", type("MistralCommonBackend", (), {}))
    return transformers.AutoProcessor.from_pretrained(model_dir)


def vlm_batch(processor, records, root):
    """NeMo Automodel's default_collate_fn for Gemma 3: the processor's chat template over the conversations with
    their images, loss on each assistant answer through its <end_of_turn> (none on image or padding tokens), then
    inputs = all but the last position and labels = all but the first."""
    import torch
    from PIL import Image
    conversations = []
    for r in records:
        conversation = []
        for m in r["messages"]:
            content = [dict(part, image=Image.open(root / part["image"]).convert("RGB"))
                       if part.get("type") == "image" else part for part in m["content"]]
            conversation.append(dict(m, content=content))
        conversations.append(conversation)
    b = processor.apply_chat_template(conversations, tokenize=True, return_dict=True, return_tensors="pt",
                                      processor_kwargs={"padding": True})
    tok = processor.tokenizer
    marker = tok.encode("<start_of_turn>model\n", add_special_tokens=False)
    stop = tok.convert_tokens_to_ids("<end_of_turn>")
    labels = torch.full_like(b["input_ids"], -100)
    for row, ids in enumerate(b["input_ids"].tolist()):
        i = 0
        while i + len(marker) <= len(ids):
            if ids[i:i + len(marker)] != marker:
                i += 1
                continue
            start = end = i + len(marker)
            while end < len(ids) and ids[end] != stop:
                end += 1
            end = min(end + 1, len(ids))
            labels[row, start:end] = b["input_ids"][row, start:end]
            i = end
    labels[b["attention_mask"] == 0] = -100
    inputs = {k: (v[:, :-1] if k != "pixel_values" else v) for k, v in b.items()}
    return inputs, labels[:, 1:].contiguous()


def build_vlm_model(args):
    """The transformers image-text model of a `train-vlm` run, frozen as NeMo's freeze_config defaults freeze it
    (embeddings, with the tied LM head, and the vision tower), LoRA on the decoder's projections when asked."""
    import torch
    from transformers import AutoModelForImageTextToText
    model = AutoModelForImageTextToText.from_pretrained(args.model_dir, dtype=torch.float32,
                                                        attn_implementation=args.attn)
    if args.dtype == "bf16" and args.bf16 == "cast":
        model = model.to(torch.bfloat16)
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    model.get_input_embeddings().weight.requires_grad_(False)
    if args.mode == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=common.LORA_RANK, lora_alpha=common.LORA_ALPHA, lora_dropout=0.0,
                                                 target_modules=r"model\.language_model.*_proj", bias="none"))
    model.train()
    if args.compile != "none":
        model = torch.compile(model, mode=args.compile)
    return model


def cmd_train_vlm(args):
    """Each step collates its conversations (image decoding and processing included, as the automodel side's step
    time includes its collate), then forward, the masked cross-entropy of NeMo's recipe, backward and AdamW."""
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = pathlib.Path(args.data)
    records = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines() if line.strip()]
    steps = args.warmup_steps + args.steps
    if len(records) < args.batch * steps:
        raise SystemExit(f"{data} has {len(records)} conversations, {args.batch * steps} needed")
    processor = load_processor(args.model_dir)
    model = build_vlm_model(args)
    optimizer = adamw(args, [p for p in model.parameters() if p.requires_grad])
    autocast = args.dtype == "bf16" and args.bf16 == "autocast"
    dtype = torch.bfloat16 if args.dtype == "bf16" and args.bf16 == "cast" else torch.float32
    records_out = []
    for step in range(steps):
        t0 = time.perf_counter()
        inputs, labels = vlm_batch(processor, records[step * args.batch:(step + 1) * args.batch], data)
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(**inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        # As automodel's num_tokens_per_step counts them: each row up to its last label.
        labelled = labels != -100
        last = labels.shape[1] - labelled.flip(1).int().argmax(1)
        tokens = int(torch.where(labelled.any(1), last, 0).sum())
        records_out.append({"step": step, "loss": float(loss.detach()), "seconds": seconds, "tokens": tokens})
        print(f"step {step} loss {records_out[-1]['loss']:.5f} {seconds * 1e3:.0f} ms", flush=True)
    emit({"steps": records_out, "threads": torch.get_num_threads(), **dtype_summary(model)}, args.result)


# ---- environment -----------------------------------------------------------------------------------------------------

def cmd_env(args):
    import importlib.metadata as md

    import torch
    versions = {"python": sys.version.split()[0]}
    for pkg in ("torch", "transformers", "peft", "tokenizers"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "absent"
    config = torch.__config__.show()
    blas = next((line.strip() for line in config.splitlines() if "BLAS_INFO" in line), "")
    emit({"versions": versions, "torch_blas": blas, "mkldnn": torch.backends.mkldnn.is_available(),
          "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}, args.result)


def add_train_args(t, seq=True):
    """The options of `train`, shared with bench/train_torch_dp.py and (without --seq) `train-vlm`."""
    t.add_argument("--model-dir", required=True)
    t.add_argument("--data", required=True)
    if seq:
        t.add_argument("--seq", type=int, required=True)
    t.add_argument("--batch", type=int, required=True)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--warmup-steps", type=int, required=True)
    t.add_argument("--threads", type=int, required=True)
    t.add_argument("--mode", choices=["full", "lora"], required=True)
    t.add_argument("--dtype", choices=["fp32", "bf16"], required=True)
    t.add_argument("--bf16", choices=["cast", "autocast"], default="cast")
    t.add_argument("--attn", default="sdpa")
    t.add_argument("--activation-checkpointing", action="store_true")
    t.add_argument("--compile", choices=["none", "default", "max-autotune"], default="none",
                   help="torch.compile the model with this mode")
    t.add_argument("--lr", type=float, required=True)
    t.add_argument("--beta1", type=float, required=True)
    t.add_argument("--beta2", type=float, required=True)
    t.add_argument("--eps", type=float, required=True)
    t.add_argument("--weight-decay", type=float, required=True)
    t.add_argument("--lora-targets", type=lambda v: v.split(","), default=None,
                   help="peft target_modules, comma-separated (default: train_common.LORA_TARGETS)")



def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("assets")
    a.add_argument("--work-dir", required=True)
    a.add_argument("--shape", required=True, choices=sorted(common.SHAPES))
    g = sub.add_parser("gemm")
    g.add_argument("--threads", type=int, required=True)
    g.add_argument("--dtype", choices=["fp32", "bf16"], required=True)
    g.add_argument("--n", type=int, default=2048)
    g.add_argument("--seconds", type=float, default=3.0)
    t = sub.add_parser("train")
    add_train_args(t)
    v = sub.add_parser("train-vlm")
    add_train_args(v, seq=False)
    sub.add_parser("env")
    for s in (a, g, t, v, sub.choices["env"]):
        s.add_argument("--result")
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    {"assets": cmd_assets, "gemm": cmd_gemm, "train": cmd_train, "train-vlm": cmd_train_vlm, "env": cmd_env}[args.cmd](args)


if __name__ == "__main__":
    main()
