"""Oracle tests of components/tokenizer against the `tokenizers` package.

Tokenizers are trained with `tokenizers` itself on a generated corpus (GPT-2 byte-level, Llama-3 and
Qwen2 split regexes, SentencePiece-style BPE with byte fallback in Llama-2 / Mistral variants, a
normalizer + Digits/Punctuation/Whitespace stack), plus real vocabularies shipped inside packages on
the Python index. Every line of a >= 1 MB corpus must give identical ids, offsets and decoded text
(`automodel tokenize --jsonl` runs our encoder over all lines with encode_batch)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers  # noqa: E402
from tokenizers import processors, trainers  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from tokenizer_corpus import make_lines  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build"))
CLI = pathlib.Path(os.environ.get("AUTOMODEL_CLI", BUILD / "automodel"))
# AddressSanitizer's shadow memory and quarantine inflate RSS: memory bounds are not measurable on that build.
SANITIZED = "AUTOMODEL_SANITIZE:BOOL=ON" in ((BUILD / "CMakeCache.txt").read_text()
                                             if (BUILD / "CMakeCache.txt").exists() else "")

GPT2_RE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_RE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
             r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2_RE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
            r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")


@pytest.fixture(scope="module")
def lines():
    return make_lines()


@pytest.fixture(scope="module")
def train_lines(lines):
    return lines[:1500]


def site_file(*parts):
    for p in sys.path:
        f = pathlib.Path(p).joinpath(*parts)
        if f.exists():
            return f
    pytest.skip(f"{'/'.join(parts)} is not installed")


def run_ours(tok_dir, lines, add_special):
    inp = pathlib.Path(tok_dir) / "lines.jsonl"
    inp.write_text("".join(json.dumps(x) + "\n" for x in lines))
    cmd = [str(CLI), "tokenize", "--tokenizer", str(tok_dir), "--file", str(inp), "--jsonl"]
    if not add_special:
        cmd.append("--no-special")
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = [json.loads(x) for x in res.stdout.split("\n") if x]
    assert len(out) == len(lines)
    return out


def char_offsets(line, offsets):
    """Our byte offsets -> character offsets (None where one falls inside a character)."""
    b2c, b = {}, 0
    for i, ch in enumerate(line):
        b2c[b] = i
        b += len(ch.encode("utf-8"))
    b2c[b] = len(line)
    return [(b2c.get(a), b2c.get(e)) for a, e in offsets]


def compare(tok, tok_dir, lines, add_special=True, check_offsets=True):
    """Encodes every line with both; returns nothing, asserts zero mismatches (reports the first few)."""
    tok_dir = pathlib.Path(tok_dir)
    tok.save(str(tok_dir / "tokenizer.json"))
    ref = tok.encode_batch(lines, add_special_tokens=add_special)
    ours = run_ours(tok_dir, lines, add_special)
    ref_dec = tok.decode_batch([e.ids for e in ref], skip_special_tokens=False)
    ref_skip = tok.decode_batch([e.ids for e in ref], skip_special_tokens=True)
    bad = []
    for i, (line, r, o) in enumerate(zip(lines, ref, ours)):
        if o["ids"] != r.ids:
            bad.append(f"line {i} {line[:80]!r}: ids {o['ids'][:20]} != {r.ids[:20]}")
        elif check_offsets and char_offsets(line, o["offsets"]) != [tuple(x) for x in r.offsets]:
            bad.append(f"line {i} {line[:80]!r}: offsets {char_offsets(line, o['offsets'])[:12]} != {r.offsets[:12]}")
        elif o["special_tokens_mask"] != r.special_tokens_mask:
            bad.append(f"line {i}: special_tokens_mask {o['special_tokens_mask']} != {r.special_tokens_mask}")
        elif o["decoded"] != ref_dec[i] or o["decoded_skip"] != ref_skip[i]:
            bad.append(f"line {i}: decoded {o['decoded'][:80]!r} != {ref_dec[i][:80]!r}")
        if len(bad) >= 5:
            break
    assert not bad, "\n".join(bad)


def train_byte_level(train_lines, pre, post, specials, ignore_merges=False, normalizer=None, vocab_size=3000):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(train_lines, trainer)
    tok.post_processor = post(tok) if callable(post) else post
    return tok


def test_corpus_is_big_and_mixed(lines):
    text = "".join(lines)
    assert len(text.encode("utf-8")) >= 1_000_000
    for ch in ["é", "Ж", "λ", "中", "ع", "न", "👨\u200d👩", "\ufffd", "\t", "\x00", "<|endoftext|>"]:
        assert ch in text


def test_gpt2_byte_level(tmp_path, lines, train_lines):
    tok = train_byte_level(train_lines, pre_tokenizers.ByteLevel(add_prefix_space=False),
                           processors.ByteLevel(trim_offsets=True), ["<|endoftext|>"])
    compare(tok, tmp_path, lines)


def test_gpt2_add_prefix_space_and_template(tmp_path, lines, train_lines):
    def post(tok):
        eot = tok.token_to_id("<|endoftext|>")
        return processors.Sequence([
            processors.ByteLevel(trim_offsets=True),
            processors.TemplateProcessing(single="<|endoftext|> $A <|endoftext|>", special_tokens=[("<|endoftext|>", eot)]),
        ])
    tok = train_byte_level(train_lines, pre_tokenizers.ByteLevel(add_prefix_space=True), post, ["<|endoftext|>"])
    compare(tok, tmp_path, lines[:3000])
    compare(tok, tmp_path, lines[:3000], add_special=False)


def _llama3_post(tok):
    bot = tok.token_to_id("<|begin_of_text|>")
    return processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bot)]),
    ])


def test_llama3_split_regex_and_added_tokens(tmp_path, lines, train_lines):
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok = train_byte_level(train_lines, pre, _llama3_post, ["<|begin_of_text|>", "<|endoftext|>"], ignore_merges=True)
    tok.add_tokens([AddedToken("[INST]", lstrip=True, rstrip=True), AddedToken("fox", single_word=True),
                    AddedToken("<pad>", normalized=False), AddedToken("Привет", normalized=True)])
    tok.add_special_tokens([AddedToken("<|im_start|>", special=True), AddedToken("<s>", special=True, rstrip=True)])
    compare(tok, tmp_path, lines)


def test_qwen2_nfc_split_regex(tmp_path, lines, train_lines):
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok = train_byte_level(train_lines, pre, processors.ByteLevel(trim_offsets=False),
                           ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], normalizer=normalizers.NFC())
    tok.add_tokens([AddedToken("café", normalized=True), AddedToken("Å", normalized=True)])
    compare(tok, tmp_path, lines)


@pytest.mark.parametrize("behavior", ["removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"])
@pytest.mark.parametrize("invert", [False, True])
def test_split_behaviors(tmp_path, lines, train_lines, behavior, invert):
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\s+|\p{N}"), behavior=behavior, invert=invert),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok = train_byte_level(train_lines[:300], pre, None, ["<|endoftext|>"], vocab_size=600)
    compare(tok, tmp_path, lines[:1500])


def _sentencepiece_base(train_lines, vocab_size=3000):
    """A SentencePiece-style BPE trained by `tokenizers`, with <0x00>..<0xFF> added to the vocabulary."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=120,
                                  show_progress=False)
    tok.train_from_iterator(train_lines, trainer)
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    nxt = max(vocab.values()) + 1
    for b in range(256):
        name = f"<0x{b:02X}>"
        if name not in vocab:
            vocab[name] = nxt
            nxt += 1
    return j


def _bos_template(j):
    return {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                     {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [j["model"]["vocab"]["<s>"]], "tokens": ["<s>"]}}}


LLAMA2_DECODER = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}


def test_llama2_sentencepiece_normalizer_stack(tmp_path, lines, train_lines):
    j = _sentencepiece_base(train_lines)
    j["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                          {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    j["pre_tokenizer"] = None
    j["decoder"] = LLAMA2_DECODER
    j["post_processor"] = _bos_template(j)
    tok = Tokenizer.from_str(json.dumps(j))
    tok.add_tokens([AddedToken("brûlée", normalized=True), AddedToken("[INST]", normalized=False)])
    compare(tok, tmp_path, lines[:4000])


@pytest.mark.parametrize("scheme,split", [("first", False), ("always", True), ("never", True)])
def test_metaspace_variants(tmp_path, lines, train_lines, scheme, split):
    j = _sentencepiece_base(train_lines)
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": split}
    j["decoder"] = ({"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": split}
                    if scheme != "first" else LLAMA2_DECODER)
    j["normalizer"] = {"type": "NFKC"} if scheme == "always" else None
    j["post_processor"] = _bos_template(j)
    tok = Tokenizer.from_str(json.dumps(j))
    compare(tok, tmp_path, lines[:4000])


def test_normalizers_and_simple_pre_tokenizers(tmp_path, lines, train_lines):
    tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.Strip(),
                                           normalizers.Replace("``", '"')])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                 pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.Punctuation()])
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["[UNK]"], continuing_subword_prefix="##",
                                  end_of_word_suffix="</w>", show_progress=False)
    tok.train_from_iterator(train_lines, trainer)
    compare(tok, tmp_path, lines[:4000])


def test_whitespace_split_digits_punctuation_variants(tmp_path, lines, train_lines):
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(),
                                           normalizers.Replace(Regex(r"\s{2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Digits(individual_digits=False),
                                                 pre_tokenizers.Punctuation(behavior="contiguous")])
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["[UNK]"], show_progress=False)
    tok.train_from_iterator(train_lines, trainer)
    compare(tok, tmp_path, lines[:3000])


# ---------------------------------------------------------------- real vocabularies


def test_real_anthropic_tokenizer_json(tmp_path, lines):
    tok = Tokenizer.from_file(str(site_file("anthropic", "tokenizer.json")))
    compare(tok, tmp_path, lines)


@pytest.mark.parametrize("name", ["gpt2.tiktoken", "multilingual.tiktoken"])
def test_real_whisper_tiktoken_converted(tmp_path, lines, name):
    pytest.importorskip("tiktoken")
    from transformers.convert_slow_tokenizer import TikTokenConverter
    path = site_file("whisper", "assets", name)
    tok = TikTokenConverter(vocab_file=str(path), pattern=GPT2_RE,
                            additional_special_tokens=["<|endoftext|>", "<|startoftranscript|>"]).converted()
    compare(tok, tmp_path, lines)


def test_real_mistral_tekken_converted(tmp_path, lines):
    """Mistral's Tekken vocabulary (tiktoken-style, shipped by mistral-common) through TikTokenConverter."""
    pytest.importorskip("tiktoken")
    from transformers.convert_slow_tokenizer import TikTokenConverter
    tekken = json.loads(site_file("mistral_common", "data", "tekken_240911.json").read_text())
    cfg = tekken["config"]
    n = cfg["default_vocab_size"] - cfg["default_num_special_tokens"]
    vocab_file = tmp_path / "tekken.tiktoken"
    vocab_file.write_text("".join(f"{v['token_bytes']} {v['rank']}\n" for v in tekken["vocab"][:n]))
    tok = TikTokenConverter(vocab_file=str(vocab_file), pattern=cfg["pattern"],
                            additional_special_tokens=["<s>", "</s>", "[INST]"]).converted()
    compare(tok, tmp_path, lines)


@pytest.mark.parametrize("name", ["tokenizer.model.v1", "mistral_instruct_tokenizer_240323.model.v3"])
def test_real_mistral_sentencepiece_converted(tmp_path, lines, name):
    pytest.importorskip("sentencepiece")
    from transformers import LlamaTokenizer
    model = site_file("mistral_common", "data", name)
    d = tmp_path / "src"
    d.mkdir()
    (d / "tokenizer.model").write_bytes(model.read_bytes())
    tok = LlamaTokenizer.from_pretrained(str(d)).backend_tokenizer
    compare(tok, tmp_path, lines)


def test_cli_plain_text(tmp_path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["hello world"] * 10, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    res = subprocess.run([str(CLI), "tokenize", "--tokenizer", str(tmp_path), "--text", "hello world"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == tok.encode("hello world").ids


# ---------------------------------------------------------------- streamed `tokenize --file`

SEPARATORS = ["\n", "\n", "\n", "\r\n", "\n\n", " \n", "\n ", "\t\n", ".\n", "!\n\n", "\n\n\n", "<|endoftext|>\n",
              "\n<|endoftext|>", "\u00a0\n", "\n\u3000", "\n\u0301", "\n-", "\n1", "'\ns", " \n\n  "]


def _stream_text(lines, min_bytes=4_000_000):
    """Corpus lines joined by newline patterns around every kind of neighbour, repeated to min_bytes (UTF-8)."""
    import random
    rng = random.Random(7)
    parts, total = [], 0
    while total < min_bytes:
        for line in lines:
            piece = line + rng.choice(SEPARATORS)
            parts.append(piece)
            total += len(piece.encode("utf-8"))
            if total >= min_bytes:
                break
    return "".join(parts)


def _peak_rss_kib(tok_dir, path):
    """Peak RSS of `tokenize --file`, polled from /proc (VmHWM belongs to the process's own memory after exec; the
    ru_maxrss that wait4 reports starts from the forking test process's peak)."""
    import time
    proc = subprocess.Popen([str(CLI), "tokenize", "--tokenizer", str(tok_dir), "--file", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            for line in pathlib.Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.01)
    assert proc.returncode == 0
    return peak


@pytest.mark.parametrize("kind", ["tiny_llama", "llama3_split_added_tokens", "whitespace_nfkc_lowercase",
                                  "llama2_prepend_whole_text"])
def test_streamed_file_ids_equal_whole_text_ids(tmp_path, lines, train_lines, kind):
    """`tokenize --file` encodes a multi-MB file in chunks cut after newlines; its ids must be exactly
    tokenizers' encode(whole_text) for pipelines that stream (with bounded memory) and for one that does not."""
    text = _stream_text(lines)
    streams = True
    if kind == "tiny_llama":
        tok = Tokenizer.from_file(str(ROOT / "assets" / "tiny-llama" / "tokenizer.json"))
    elif kind == "llama3_split_added_tokens":
        pre = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tok = train_byte_level(train_lines, pre, _llama3_post, ["<|begin_of_text|>", "<|endoftext|>"])
        tok.add_tokens([AddedToken("[INST]", lstrip=True, rstrip=True), AddedToken("fox", single_word=True),
                        AddedToken("Привет", normalized=True)])
    elif kind == "whitespace_nfkc_lowercase":
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits()])
        tok.train_from_iterator(train_lines, trainers.BpeTrainer(vocab_size=1500, special_tokens=["[UNK]"],
                                                                 show_progress=False))
        tok.add_tokens([AddedToken("Fox", normalized=True)])
    else:
        j = _sentencepiece_base(train_lines)
        j["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
        j["pre_tokenizer"] = None
        j["decoder"] = LLAMA2_DECODER
        j["post_processor"] = _bos_template(j)
        tok = Tokenizer.from_str(json.dumps(j))
        streams = False
    tok.save(str(tmp_path / "tokenizer.json"))
    path = tmp_path / "text.txt"
    path.write_bytes(text.encode("utf-8"))
    res = subprocess.run([str(CLI), "tokenize", "--tokenizer", str(tmp_path), "--file", str(path)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ours, ref = json.loads(res.stdout), tok.encode(text).ids
    if ours != ref:
        first = next(i for i, (a, b) in enumerate(zip(ours + [None], ref + [None])) if a != b)
        pytest.fail(f"{kind}: {len(ours)} ids vs {len(ref)}, first difference at {first}: "
                    f"{ours[first - 3:first + 5]} != {ref[first - 3:first + 5]}")
    # Streaming keeps memory far below what encoding 4 MB at once takes (~600 MB).
    if not SANITIZED:
        rss_mib = _peak_rss_kib(tmp_path, path) / 1024
        assert (rss_mib < 200) == streams, f"{kind}: peak RSS {rss_mib:.0f} MiB"
