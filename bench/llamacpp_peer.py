#!/usr/bin/env python3
"""llama.cpp's own CPU training (ggml-opt through the `llama-finetune` example, examples/training/finetune.cpp) as
the framework `llamacpp` of bench/train_compare.py. See bench/README.md ("llama.cpp as a peer").

Setup, once per work directory (cached under --llamacpp-dir, default <work-dir>/llamacpp):
  source   llama.cpp as vendored in the PyPI sdist of llama-cpp-python (`pip download --no-binary :all: --no-deps`;
           nothing is installed), or the tree given by --llamacpp-src
  build    cmake, CPU backend only, -march=native, Release: llama-finetune and llama-tokenize
  convert  the benchmark's model directory to an f32 GGUF with the tree's convert_hf_to_gguf.py (and its own
           gguf-py), run by the harness's --python (torch, transformers, numpy)
  text     the training text: the benchmark samples joined by spaces, cut so that llama-finetune's overlapping
           windows are exactly the number of steps; its ids by `tokenizers` against llama-tokenize's

The harness imports this module with the standard library only; `convert` and `text` run as child processes
(`python bench/llamacpp_peer.py convert|text ...`) under the Python that has torch, transformers and tokenizers."""
import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import train_common as common  # noqa: E402

LLAMA_CPP_PYTHON = "0.3.36"  # the llama-cpp-python sdist whose vendor/llama.cpp is built
TARGETS = ["llama-finetune", "llama-tokenize"]
# Tensors llama.cpp's training never updates (src/llama-context.cpp, llama_set_param): the token embedding and, since
# a tied LM head is the same tensor, the LM head of a tied model; and any tensor that is not F32.
FROZEN_TENSORS = ("token_embd.weight", "rope_freqs.weight")
# ggml-opt's AdamW moments and epsilon: common_opt_lr_pars takes lr and weight decay from the command line and
# leaves these at ggml_opt_get_default_optimizer_params' values.
FIXED_BETAS, FIXED_EPS = (0.9, 0.999), 1e-8
CONTEXT_PAD = 256  # llama_context rounds n_ctx up to a multiple of this (GGML_PAD(n_ctx, 256))


class SetupError(Exception):
    """A step of the setup failed; the message is the reason every llamacpp row reports."""


def unsupported_reason(cfg):
    """Why llama.cpp cannot run this configuration at all (None when it can)."""
    if cfg["mode"] != "full":
        return ("llama.cpp's training (llama-finetune, ggml-opt) has no LoRA: it trains every F32 tensor of the "
                "model but the token embedding")
    if cfg["dtype"] != "fp32":
        return ("llama.cpp trains F32 tensors only (llama_set_param skips other types; OUT_PROD has no f16 "
                "backward): a bf16 / f16 GGUF would train nothing but the norms")
    if cfg["ac"]:
        return "llama.cpp's training has no activation checkpointing"
    if cfg["seq"] % CONTEXT_PAD:
        return (f"llama.cpp pads its context to a multiple of {CONTEXT_PAD} tokens (llama_context), so it would train "
                f"{-(-cfg['seq'] // CONTEXT_PAD) * CONTEXT_PAD}-token windows in {cfg['seq']}-token pieces: use a "
                f"seq that is a multiple of {CONTEXT_PAD}")
    return None


def differences(args, meta):
    """What llama-finetune runs differently from the other frameworks in a supported configuration (the row's notes)."""
    out = [f"embedding{' and tied LM head' if meta['tied'] else ''} frozen ({meta['trainable']} of "
           f"{meta['total']} parameters trained)"]
    if args.batch != 1:
        out.append(f"one sequence per optimizer step (batch 1, not {args.batch})")
    if tuple(args.betas) != FIXED_BETAS or args.eps != FIXED_EPS:
        out.append(f"AdamW betas {FIXED_BETAS}, eps {FIXED_EPS:g} (fixed in llama.cpp)")
    return out


# ---- source, build -----------------------------------------------------------------------------------------------

def _run(cmd, log, cwd=None, env=None):
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        tail = pathlib.Path(log).read_text(errors="replace").strip().splitlines()[-3:]
        raise SetupError(f"{pathlib.Path(cmd[0]).name} {' '.join(cmd[1:3])}... failed (exit {r.returncode}; "
                         f"{log}): {' | '.join(tail)[:300]}")


def source_tree(root, python, src=None):
    """The llama.cpp source tree: --llamacpp-src, or vendor/llama.cpp of the llama-cpp-python sdist (downloaded and
    unpacked once under root/src). Checks that it has the training example and the converter."""
    if src:
        tree = pathlib.Path(src).resolve()
    else:
        dl = root / "src"
        tree = dl / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
        if not (tree / "CMakeLists.txt").exists():
            dl.mkdir(parents=True, exist_ok=True)
            sdist = dl / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
            if not sdist.exists():
                print(f"llamacpp: downloading the llama-cpp-python {LLAMA_CPP_PYTHON} sdist (pip) ...", flush=True)
                _run([python, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                      "--disable-pip-version-check", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(dl)],
                     dl / "pip-download.log")
            with tarfile.open(sdist) as tar:
                try:
                    tar.extractall(dl, filter="data")
                except TypeError:  # Python < 3.11.4 has no extraction filters
                    tar.extractall(dl)
    for need in ("CMakeLists.txt", "examples/training/finetune.cpp", "convert_hf_to_gguf.py", "gguf-py/gguf"):
        if not (tree / need).exists():
            raise SetupError(f"the llama.cpp tree {tree} has no {need}: llama-finetune needs a llama.cpp with "
                             "examples/training (2025 or later)")
    return tree


def build(root, tree):
    """llama-finetune and llama-tokenize, CPU only, native ISA, Release, static; configured and built once."""
    build_dir = root / "build"
    bins = {t: build_dir / "bin" / t for t in TARGETS}
    if all(b.exists() for b in bins.values()):
        return bins
    print(f"llamacpp: building {', '.join(TARGETS)} in {build_dir} (once; minutes) ...", flush=True)
    launcher = [f"-DCMAKE_{lang}_COMPILER_LAUNCHER=ccache" for lang in ("C", "CXX")] if shutil.which("ccache") else []
    _run(["cmake", "-S", str(tree), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
          "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF",
          "-DLLAMA_OPENSSL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", *launcher], root / "cmake-configure.log")
    _run(["cmake", "--build", str(build_dir), "-j", str(os.cpu_count() or 2), "--target", *TARGETS],
         root / "cmake-build.log")
    return bins


# ---- model, text ---------------------------------------------------------------------------------------------------

def gguf_of(root, tree, python, shape, model_dir):
    """The f32 GGUF of a benchmark model directory and its meta (parameter counts, tokenizer check), converted once
    (again when the model directory's config.json is newer)."""
    out = root / "models" / f"{shape}-f32.gguf"
    meta_path = out.with_suffix(".json")
    stamp = os.stat(pathlib.Path(model_dir) / "config.json").st_mtime
    if meta_path.exists() and out.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("config_mtime") == stamp:
            return out, meta
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"llamacpp: converting {model_dir} to {out.name} (convert_hf_to_gguf.py --outtype f32) ...", flush=True)
    _run([python, __file__, "convert", "--tree", str(tree), "--model-dir", str(model_dir), "--out", str(out),
          "--meta", str(meta_path)], root / "models" / f"{shape}-convert.log")
    meta = json.loads(meta_path.read_text())
    meta["config_mtime"] = stamp
    meta_path.write_text(json.dumps(meta, indent=1))
    return out, meta


def training_text(root, python, bins, gguf, meta, shape, model_dir, data, seq, windows):
    """A text whose tokens make exactly `windows` llama-finetune samples at context seq, and the check of its ids:
    `tokenizers`' encoding against llama-tokenize's on the same GGUF. Cached per shape, data file and windows (made
    again with the GGUF)."""
    base = root / "data" / f"{shape}-{pathlib.Path(data).stem}-w{windows}"
    txt, check_path = base.with_suffix(".txt"), base.with_suffix(".json")
    if check_path.exists() and txt.exists():
        check = json.loads(check_path.read_text())
        if check.get("config_mtime") == meta["config_mtime"]:
            return txt, check
    base.parent.mkdir(parents=True, exist_ok=True)
    ids_path = base.with_suffix(".ids.json")
    _run([python, __file__, "text", "--model-dir", str(model_dir), "--data", str(data), "--seq", str(seq),
          "--windows", str(windows), "--out", str(txt), "--ids", str(ids_path)], base.with_suffix(".text.log"))
    ours = json.loads(ids_path.read_text())
    log = base.with_suffix(".tokenize.log")
    r = subprocess.run([str(bins["llama-tokenize"]), "-m", str(gguf), "-f", str(txt), "--ids", "--log-disable"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    log.write_text(r.stderr)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("[")]
    if r.returncode != 0 or not lines:
        raise SetupError(f"llama-tokenize failed (exit {r.returncode}; {log})")
    theirs = json.loads(lines[-1])
    first = next((i for i, (a, b) in enumerate(zip(ours["ids"], theirs)) if a != b), None)
    if first is None and len(ours["ids"]) != len(theirs):
        first = min(len(ours["ids"]), len(theirs))
    check = {"tokens": len(theirs), "tokenizers_tokens": len(ours["ids"]), "same_ids": first is None,
             "first_difference": first, "first_window_is_sample0": ours["first_window_is_sample0"],
             "windows": (len(theirs) - seq - 1) // (seq // 2), "config_mtime": meta["config_mtime"]}
    check_path.write_text(json.dumps(check, indent=1))
    return txt, check


class Peer:
    """The llama.cpp side of one harness run: the source and build once, a GGUF per shape and a text per
    (shape, seq) on first use; a setup failure becomes every row's reason."""

    def __init__(self, args, work):
        self.args = args
        self.root = pathlib.Path(args.llamacpp_dir or work / "llamacpp")
        self.root.mkdir(parents=True, exist_ok=True)
        self.error, self.bins, self.tree, self.models = None, None, None, {}
        try:
            self.tree = source_tree(self.root, args.python, args.llamacpp_src)
            self.bins = build(self.root, self.tree)
        except SetupError as e:
            self.error = str(e)

    def command(self, cfg, model_dir, data):
        """(llama-finetune's argv, its GGUF meta, the text check) for one configuration; raises SetupError."""
        if self.error:
            raise SetupError(self.error)
        a, seq = self.args, cfg["seq"]
        if cfg["shape"] not in self.models:  # converted once; a failed conversion is not tried again
            try:
                self.models[cfg["shape"]] = gguf_of(self.root, self.tree, a.python, cfg["shape"], model_dir)
            except SetupError as e:
                self.models[cfg["shape"]] = e
        if isinstance(self.models[cfg["shape"]], SetupError):
            raise self.models[cfg["shape"]]
        gguf, meta = self.models[cfg["shape"]]
        # one window more than the steps: a step is timed from its optimizer-parameter log line to the next one's
        windows = a.warmup_steps + a.steps + 1
        txt, check = training_text(self.root, a.python, self.bins, gguf, meta, cfg["shape"], model_dir, data, seq,
                                   windows)
        if check["windows"] != windows:
            raise SetupError(f"llama.cpp tokenizes {txt} to {check['tokens']} tokens, {check['windows']} windows of "
                             f"{seq}, not {windows} (tokenizers: {check['tokenizers_tokens']} tokens)")
        t = str(cfg["threads"])
        cmd = [str(self.bins["llama-finetune"]), "-m", str(gguf), "-f", str(txt),
               # the context is one training sequence; batch = ubatch = context so that K and V get gradients
               "-c", str(seq), "-b", str(seq), "-ub", str(seq),
               # the training graph runs on the thread count the model's warm-up decode set (-tb): keep the warm-up
               "-t", t, "-tb", t,
               "-opt", "adamw", "-lr", repr(a.lr), "-wd", repr(a.weight_decay), "-epochs", "1", "-val-split", "0",
               "-o", os.devnull, "--log-prefix", "--log-timestamps", "--log-colors", "off"]
        return cmd, meta, check


# ---- output ------------------------------------------------------------------------------------------------------

# common/log.cpp with --log-prefix --log-timestamps: "<minutes>.<ss>.<ms>.<us> I <message>"; common_opt_lr_pars
# logs "epoch <e> lr=<lr>" when ggml_opt_eval starts an optimizer step.
STEP_LOG = re.compile(r"(\d+)\.(\d{2})\.(\d{3})\.(\d{3}) I epoch \S+ lr=")
# ggml_opt_epoch_callback_progress_bar after each step: the running mean of the epoch's losses so far.
PROGRESS = re.compile(r"train: \[[^\]]*\] data=(\d+)/(\d+) loss=([-+0-9.naif]+)")


def parse_steps(stderr, seq):
    """Per-step seconds (between consecutive optimizer-step log lines: the last step has none and is not timed) and
    per-step losses (from the progress bar's running mean)."""
    starts = [((int(m) * 60 + int(s)) * 1000 + int(ms)) * 1e-3 + int(us) * 1e-6
              for m, s, ms, us in STEP_LOG.findall(stderr)]
    means = {}
    for idata, _, loss in PROGRESS.findall(stderr):
        means[int(idata)] = float(loss)
    means = [means[k] for k in sorted(means)]
    losses = [(k + 1) * m - k * means[k - 1] if k else m for k, m in enumerate(means)]
    return [{"step": k, "loss": losses[k] if k < len(losses) else float("nan"), "tokens": seq,
             "seconds": starts[k + 1] - starts[k]} for k in range(len(starts) - 1)]


def result_row(r, cfg, meta, check, args):
    """The harness's row fields from a finished llama-finetune run (status ok, or failed with the reason)."""
    steps = parse_steps(r["stderr"], cfg["seq"])
    if len(steps) < args.warmup_steps + args.steps:
        return {"status": "failed", "reason": f"llama-finetune logged {len(steps)} timed steps, expected "
                f"{args.warmup_steps + args.steps} (see its .err log)"}
    notes = differences(args, meta)
    if not check["same_ids"]:
        notes.append(f"llama.cpp's ids differ from tokenizers' from token {check['first_difference']}")
    if not check["first_window_is_sample0"]:
        notes.append("its first window is not the first sample's ids: loss@0 is not comparable")
    shape = common.SHAPES[cfg["shape"]]
    # Model FLOPs of what it computes: no weight gradient of a frozen (tied) LM head, 2·V·H per token less.
    lm_head = 2 * shape["vocab_size"] * shape["hidden_size"] if meta["tied"] else 0
    return {"status": "ok", "steps": steps[:args.warmup_steps + args.steps], "trainable_params": meta["trainable"],
            "notes": notes, "tokenizer_check": check,
            "flops_per_token": common.train_flops_per_token(shape, cfg["seq"], cfg["mode"]) - lm_head}


# ---- child processes (run under --python) -------------------------------------------------------------------------

def cmd_convert(a):
    """convert_hf_to_gguf.py --outtype f32 in this process, then the GGUF's parameter counts. The benchmark tokenizer
    is a byte-level BPE the converter does not know (its pre-tokenizer hash is in no list): it gets the GPT-2
    pre-tokenizer, whose regex is the one `tokenizers`' ByteLevel(use_regex=True) splits with; the `text` step checks
    the ids. The converter writes add_bos_token false for any vocab of 49152 (its Granite rule); the benchmark
    tokenizer prepends BOS, so the GGUF says what the tokenizer does."""
    import runpy

    from tokenizers import Tokenizer
    tree = pathlib.Path(a.tree)
    sys.path.insert(0, str(tree))
    sys.path.insert(1, str(tree / "gguf-py"))
    from conversion import base, llama

    known = base.TextModel.get_vocab_base_pre

    def pre_tokenizer(self, tokenizer):
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            print("llamacpp_peer: unknown BPE pre-tokenizer, using 'gpt-2' (the byte-level regex)", flush=True)
            return "gpt-2"

    tok = Tokenizer.from_file(str(pathlib.Path(a.model_dir) / "tokenizer.json"))
    bos = tok.token_to_id(common.SPECIAL_TOKENS[0])
    adds_bos = bos is not None and tok.encode("a").ids[:1] == [bos]
    set_vocab = llama.LlamaModel.set_vocab

    def set_vocab_keeping_bos(self):
        set_vocab(self)
        self.gguf_writer.add_add_bos_token(adds_bos)

    base.TextModel.get_vocab_base_pre = pre_tokenizer
    llama.LlamaModel.set_vocab = set_vocab_keeping_bos
    sys.argv = [str(tree / "convert_hf_to_gguf.py"), a.model_dir, "--outtype", "f32", "--outfile", a.out]
    runpy.run_path(sys.argv[0], run_name="__main__")

    import gguf
    reader = gguf.GGUFReader(a.out)
    names = {t.name for t in reader.tensors}
    total = sum(int(t.n_elements) for t in reader.tensors if t.name != "rope_freqs.weight")
    trainable = sum(int(t.n_elements) for t in reader.tensors
                    if t.tensor_type == gguf.GGMLQuantizationType.F32 and t.name not in FROZEN_TENSORS)
    types = sorted({t.tensor_type.name for t in reader.tensors})
    pathlib.Path(a.meta).write_text(json.dumps(
        {"total": total, "trainable": trainable, "tied": "output.weight" not in names, "tensor_types": types,
         "add_bos": adds_bos}, indent=1))


def cmd_text(a):
    """The samples' strings ("{text} {answer}", as both other sides tokenize them) joined by spaces, as many as
    needed and cut at a word's end so that the text is `windows` llama-finetune samples: its dataset takes
    windows of seq + 1 tokens every seq // 2 tokens, (tokens - seq - 1) // (seq // 2) of them. The first window
    is the harness's first sample (BOS and its first seq tokens)."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(pathlib.Path(a.model_dir) / "tokenizer.json"))
    records = [json.loads(line) for line in pathlib.Path(a.data).read_text().splitlines() if line.strip()]
    stride = a.seq // 2
    lo, hi = a.windows * stride + a.seq + 1, (a.windows + 1) * stride + a.seq + 1  # token counts giving `windows`
    parts, enc = [], None
    while enc is None or len(enc.ids) < lo:
        parts.append(common.sample_text(records[len(parts) % len(records)]))
        enc = tok.encode(" ".join(parts))
    text = " ".join(parts)
    end = text.find(" ", enc.offsets[lo - 1][1])
    text = text if end < 0 else text[:end]
    ids = tok.encode(text).ids
    if not lo <= len(ids) < hi:
        raise SystemExit(f"could not cut the text to {lo}..{hi - 1} tokens (got {len(ids)})")
    sample0 = tok.encode(common.sample_text(records[0])).ids[:a.seq + 1]
    pathlib.Path(a.out).write_text(text)
    pathlib.Path(a.ids).write_text(json.dumps({"ids": ids, "first_window_is_sample0": ids[:a.seq + 1] == sample0}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="model directory -> f32 GGUF + meta JSON")
    c.add_argument("--tree", required=True)
    c.add_argument("--model-dir", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--meta", required=True)
    t = sub.add_parser("text", help="the training text for llama-finetune + tokenizers' ids")
    t.add_argument("--model-dir", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--seq", type=int, required=True)
    t.add_argument("--windows", type=int, required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--ids", required=True)
    a = p.parse_args(argv)
    {"convert": cmd_convert, "text": cmd_text}[a.cmd](a)


if __name__ == "__main__":
    main()
