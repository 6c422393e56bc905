"""Answer-only loss masks against the `tokenizers` package's offsets, on real and trained vocabularies.

Prompt and answer are tokenized together; a token is the answer's when its span (as `tokenizers` reports it)
reaches past the prompt's end. Tokenizing the prompt alone and counting its tokens (NeMo Automodel's
format_prompt_completion) is wrong whenever the prompt ends in a space that merges into the answer's first token
(" 17" of " 1761"): the answer's first token would go unsupervised. Checked on byte-level BPE (GPT-2, Llama-3
regex), SentencePiece-style BPE with and without a prefix space, and vocabularies shipped in packages on the
Python index, for answers of one, two and many tokens, with and without a trailing space in the prompt, through
the data component directly (oracle runner) and through `automodel dataset` on a SQuAD file."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Regex, Tokenizer, pre_tokenizers, processors  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from conftest import run_op  # noqa: E402
from test_tokenizer import (LLAMA2_DECODER, LLAMA3_RE, GPT2_RE, _bos_template, _llama3_post,  # noqa: E402
                            _sentencepiece_base, site_file, train_byte_level)
from tokenizer_corpus import make_lines  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build"))
CLI = pathlib.Path(os.environ.get("AUTOMODEL_CLI", BUILD / "automodel"))


@pytest.fixture(scope="module")
def train_lines():
    return make_lines(min_bytes=200_000)[:1500]


def _gpt2(lines, eos=False):
    def post(tok):
        if not eos:
            return processors.ByteLevel(trim_offsets=True)
        end = tok.token_to_id("<|endoftext|>")
        return processors.Sequence([processors.ByteLevel(trim_offsets=True), processors.TemplateProcessing(
            single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", end)])])
    return train_byte_level(lines, pre_tokenizers.ByteLevel(add_prefix_space=False), post, ["<|endoftext|>"])


def _llama3(lines):
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated", invert=False),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return train_byte_level(lines, pre, _llama3_post, ["<|begin_of_text|>", "<|endoftext|>"], ignore_merges=True)


def _sentencepiece(lines, scheme):
    j = _sentencepiece_base(lines)
    if scheme == "llama2":  # normalizer Prepend("▁") + Replace(" ", "▁"), as Llama 2 / Mistral ship it
        j["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
        j["pre_tokenizer"] = None
        j["decoder"] = LLAMA2_DECODER
    else:
        j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": True}
        j["decoder"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": True}
    j["post_processor"] = _bos_template(j)
    return Tokenizer.from_str(json.dumps(j))


def _whisper_gpt2():
    pytest.importorskip("tiktoken")
    from transformers.convert_slow_tokenizer import TikTokenConverter
    return TikTokenConverter(vocab_file=str(site_file("whisper", "assets", "gpt2.tiktoken")), pattern=GPT2_RE,
                             additional_special_tokens=["<|endoftext|>"]).converted()


def _tekken(tmp_path):
    pytest.importorskip("tiktoken")
    from transformers.convert_slow_tokenizer import TikTokenConverter
    tekken = json.loads(site_file("mistral_common", "data", "tekken_240911.json").read_text())
    cfg = tekken["config"]
    n = cfg["default_vocab_size"] - cfg["default_num_special_tokens"]
    vocab_file = tmp_path / "tekken.tiktoken"
    vocab_file.write_text("".join(f"{v['token_bytes']} {v['rank']}\n" for v in tekken["vocab"][:n]))
    return TikTokenConverter(vocab_file=str(vocab_file), pattern=cfg["pattern"],
                             additional_special_tokens=["<s>", "</s>"]).converted()


def _mistral_sentencepiece(tmp_path):
    pytest.importorskip("sentencepiece")
    from transformers import LlamaTokenizer
    d = tmp_path / "sp"
    d.mkdir()
    (d / "tokenizer.model").write_bytes(site_file("mistral_common", "data", "tokenizer.model.v1").read_bytes())
    return LlamaTokenizer.from_pretrained(str(d)).backend_tokenizer


VOCABS = ["gpt2", "gpt2_eos", "llama3_regex", "sp_llama2", "sp_first", "sp_always", "sp_never",
          "real_whisper_gpt2", "real_mistral_tekken", "real_mistral_sentencepiece"]


@pytest.fixture(scope="module", params=VOCABS)
def vocab(request, train_lines, tmp_path_factory):
    """(tokenizers.Tokenizer, directory holding its tokenizer.json and a config.json)."""
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    tok = {"gpt2": lambda: _gpt2(train_lines), "gpt2_eos": lambda: _gpt2(train_lines, eos=True),
           "llama3_regex": lambda: _llama3(train_lines), "sp_llama2": lambda: _sentencepiece(train_lines, "llama2"),
           "sp_first": lambda: _sentencepiece(train_lines, "first"),
           "sp_always": lambda: _sentencepiece(train_lines, "always"),
           "sp_never": lambda: _sentencepiece(train_lines, "never"), "real_whisper_gpt2": _whisper_gpt2,
           "real_mistral_tekken": lambda: _tekken(tmp),
           "real_mistral_sentencepiece": lambda: _mistral_sentencepiece(tmp)}[name]()
    tok.save(str(tmp / "tokenizer.json"))
    shutil.copy(ROOT / "assets" / "tiny-llama" / "config.json", tmp / "config.json")
    return tok, tmp


def answer_tokens(tok, prompt, answer):
    """Indices of the tokens of encode(prompt + answer) whose span (tokenizers' offsets) reaches into the answer,
    plus the tokens the post-processor inserts after it; the answer's token count."""
    enc = tok.encode(prompt + answer)
    p = len(prompt)
    chosen, seen_content = [], False
    for i, ((s, e), special) in enumerate(zip(enc.offsets, enc.special_tokens_mask)):
        if special:
            if seen_content and chosen:
                chosen.append(i)
            continue
        seen_content = True
        if e > p:
            chosen.append(i)
    content = [i for i in chosen if not enc.special_tokens_mask[i]]
    return enc, chosen, len(content)


def pick_answers(tok, prompt):
    """Answers of 1, 2 and many tokens after `prompt` under this vocabulary."""
    candidates = ["1761", "a", "x", "the", "glass", "Paris", "honey", "Renka", "river Torlo", "in 1629",
                  "it was founded by Fenfentor", "42", "Zyx", "Fenfentor", "New Orren"]
    by_count = {}
    for a in candidates:
        n = answer_tokens(tok, prompt, a)[2]
        by_count.setdefault(min(n, 3), a)
    long_answer = "The Renka flows east into the sea, past 9000 people and their glass, since 1761."
    by_count[3] = long_answer
    return [by_count[k] for k in sorted(by_count)]


def check_sample(tok, prompt, answer, input_ids, labels):
    enc, expected, n = answer_tokens(tok, prompt, answer)
    ids = list(input_ids) + [labels[-1] if labels[-1] != -100 else enc.ids[-1]]
    assert ids == enc.ids, f"ids differ from tokenizers: {ids} vs {enc.ids}"
    supervised = [i + 1 for i, l in enumerate(labels) if l != -100]
    assert supervised == expected, (f"{prompt!r} + {answer!r}: labelled tokens "
                                    f"{[enc.tokens[i] for i in supervised]}, answer tokens "
                                    f"{[enc.tokens[i] for i in expected]}")
    assert all(labels[i - 1] == enc.ids[i] for i in supervised)
    decoded = tok.decode([enc.ids[i] for i in supervised], skip_special_tokens=True)
    # A token may straddle the boundary (":a" of "Answer:" + "a" under a Llama-3-style regex): it carries the label,
    # so the labels decode to the answer, possibly after the prompt's last characters.
    assert answer.strip() in decoded and (prompt + answer).rstrip().endswith(decoded.strip()), \
        f"labels decode to {decoded!r}, answer {answer!r}"
    return n


@pytest.mark.parametrize("prompt", ["Context: Orren lies on the Renka. Question: When was it founded? Answer: ",
                                    "Context: Orren lies on the Renka. Question: When was it founded? Answer:",
                                    "Q: capital?\nA:\n"])
def test_every_answer_token_and_only_those_carry_a_label(vocab, prompt):
    tok, tok_dir = vocab
    counts = set()
    for answer in pick_answers(tok, prompt):
        for a in (answer, " " + answer) if not prompt.endswith(" ") else (answer,):
            r = run_op("prompt_completion", {}, {"tokenizer_dir": str(tok_dir), "prompt": prompt, "answer": a})
            counts.add(min(check_sample(tok, prompt, a, r.outputs[0].tolist(), r.outputs[1].tolist()), 3))
    assert {1, 3} <= counts, f"answers of one and of many tokens were both checked: {counts}"


def test_squad_dataset_labels_the_whole_answer(vocab, tmp_path):
    """Through the recipe: `automodel dataset` on SQuAD records (prompt '... Answer: ', answers stripped)."""
    tok, tok_dir = vocab
    prompt_of = lambda c, q: f"Context: {c} Question: {q} Answer: "  # noqa: E731
    context, question = "Orren was founded in 1761 by Fenfentor.", "When was Orren founded?"
    answers = pick_answers(tok, prompt_of(context, question))
    rows = [{"context": context, "question": question, "answers": {"text": [a], "answer_start": [0]}} for a in answers]
    data = tmp_path / "squad.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model:\n  pretrained_model_name_or_path: {tok_dir}\n"
                      f"dataset:\n  _target_: nemo_automodel.components.datasets.llm.squad.make_squad_dataset\n"
                      f"  dataset_name: {data}\n")
    res = subprocess.run([str(CLI), "dataset", "-c", str(recipe)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    samples = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(samples) == len(answers)
    for s, a in zip(samples, answers):
        check_sample(tok, prompt_of(context, question), a, s["input_ids"], s["labels"])


def test_embedded_default_first_record_trains_its_first_answer_token():
    """The issue's case: assets/tiny-llama on assets/tiny-squad's first record (answer '1761'): the labels start
    at ' 17', the token the prompt's trailing space merges into."""
    tok = Tokenizer.from_file(str(ROOT / "assets" / "tiny-llama" / "tokenizer.json"))
    res = subprocess.run([str(CLI), "dataset", "-c", str(ROOT / "examples/llm_finetune/tiny_llama_squad.yaml"),
                          "--limit", "1", "--text", "--dataset.use_chat_template", "false"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    supervised = [l for l in s["labels"] if l != -100]
    assert tok.id_to_token(supervised[0]) == "Ġ17"
    assert s["label_text"] == " 1761"
