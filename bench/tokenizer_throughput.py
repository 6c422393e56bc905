#!/usr/bin/env python3
"""Single-thread encode throughput, automodel vs the `tokenizers` package, on the same vocabulary and
the same ~1.1 MB mixed-script corpus the oracle tests use. Prints a table and the ratio.

    .venv/bin/python bench/tokenizer_throughput.py [--repeats 5]

Vocabularies: GPT-2's (whisper's gpt2.tiktoken converted by transformers' TikTokenConverter) and a
SentencePiece-style Mistral v1 model converted by transformers, when those packages are installed."""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers starts its pool
os.environ["TOKENIZERS_PARALLELISM"] = "false"

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "oracle"))
from tokenizer_corpus import make_lines  # noqa: E402

BENCH = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "bench" / "automodel_tokenizer_bench"
GPT2_RE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def site_file(*parts):
    for p in sys.path:
        f = pathlib.Path(p).joinpath(*parts)
        if f.exists():
            return f
    return None


def vocabularies():
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    gpt2 = site_file("whisper", "assets", "gpt2.tiktoken")
    if gpt2:
        tok = TikTokenConverter(vocab_file=str(gpt2), pattern=GPT2_RE,
                                additional_special_tokens=["<|endoftext|>"]).converted()
        yield "gpt2 (byte-level BPE)", PreTrainedTokenizerFast(tokenizer_object=tok)
    sp = site_file("mistral_common", "data", "tokenizer.model.v1")
    if sp:
        from transformers import LlamaTokenizer
        yield "mistral v1 (sentencepiece BPE)", LlamaTokenizer(vocab_file=str(sp))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    assert BENCH.exists(), f"{BENCH} missing: build first (scripts/build.sh)"
    lines = make_lines()
    nbytes = sum(len(x.encode()) for x in lines)
    print(f"corpus: {len(lines)} lines, {nbytes / 1e6:.2f} MB; single thread; best of {args.repeats}")
    print(f"{'vocabulary':34} {'tokenizers MB/s':>16} {'automodel MB/s':>15} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        (d / "lines.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        for name, fast in vocabularies():
            tok_dir = d / name.split()[0]
            fast.save_pretrained(str(tok_dir))
            backend = fast.backend_tokenizer
            best = 1e30
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                backend.encode_batch(lines)
                best = min(best, time.perf_counter() - t0)
            theirs = nbytes / best / 1e6
            out = subprocess.run([str(BENCH), str(tok_dir), str(d / "lines.jsonl"), str(args.repeats)],
                                 capture_output=True, text=True, check=True)
            ours = json.loads(out.stdout)["mb_per_s"]
            print(f"{name:34} {theirs:16.2f} {ours:15.2f} {ours / theirs:6.2f}")


if __name__ == "__main__":
    main()
