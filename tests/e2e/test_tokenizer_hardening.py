"""`automodel tokenize` and `automodel chat-template` on bad input, run as a user would: each is a clear error
(exit code 1, what / where / what to do), never a crash or a hang; and borderline tokenizer.json files that the
`tokenizers` package accepts give its ids."""
import json
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"
TINY = ROOT / "assets" / "tiny-llama"


def run(*args, timeout=120):
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def expect_error(res, *parts):
    assert res.returncode == 1, (res.returncode, res.stderr)
    for part in parts:
        assert part in res.stderr, f"{part!r} not in {res.stderr!r}"
    assert "what to do:" in res.stderr, res.stderr


def test_tokenize_file_that_is_a_directory(tmp_path):
    expect_error(run("tokenize", "--tokenizer", TINY, "--file", tmp_path), "is a directory, not a file")


def test_tokenize_missing_file(tmp_path):
    expect_error(run("tokenize", "--tokenizer", TINY, "--file", tmp_path / "nope.txt"), "no such file")
    expect_error(run("tokenize", "--tokenizer", TINY, "--file", tmp_path / "nope.jsonl", "--jsonl"), "no such file")


def test_tokenize_unreadable_file(tmp_path):
    # /proc/self/mem opens but cannot be read at offset 0 (root reads any mode-000 file, so that is no test here).
    res = run("tokenize", "--tokenizer", TINY, "--file", "/proc/self/mem")
    assert res.returncode == 1, res.stderr
    assert "cannot read" in res.stderr and "Input/output error" in res.stderr, res.stderr


def test_tokenize_invalid_utf8_names_the_byte(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"hello\nworld\n" + b"\xff" + b"tail\n")
    expect_error(run("tokenize", "--tokenizer", TINY, "--file", f), "not valid UTF-8 (at byte 12)", str(f))


def test_tokenize_jsonl_line_that_is_not_a_string(tmp_path):
    f = tmp_path / "lines.jsonl"
    f.write_text('"ok"\n{"text": 1}\n')
    expect_error(run("tokenize", "--tokenizer", TINY, "--file", f, "--jsonl"), "is not a JSON string", f"{f}:2")


def test_tokenize_file_gives_the_ids_of_the_whole_text(tmp_path):
    text = "".join(f"line {i}: words, numbers {i * 7}\n  indented\n\n" for i in range(30000))  # ~1 MB, many chunks
    f = tmp_path / "t.txt"
    f.write_text(text)
    res = run("tokenize", "--tokenizer", TINY, "--file", f)
    assert res.returncode == 0, res.stderr
    whole = run("tokenize", "--tokenizer", TINY, "--text", text[:20000])
    assert json.loads(res.stdout)[:100] == json.loads(whole.stdout)[:100]
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert json.loads(run("tokenize", "--tokenizer", TINY, "--file", empty).stdout) == json.loads(
        run("tokenize", "--tokenizer", TINY, "--text", "").stdout)


def broken_tokenizer(tmp_path, change):
    d = tmp_path / "tok"
    d.mkdir()
    j = json.loads((TINY / "tokenizer.json").read_text())
    change(j)
    (d / "tokenizer.json").write_text(json.dumps(j))
    shutil.copy(TINY / "tokenizer_config.json", d / "tokenizer_config.json")
    return d


def test_tokenizer_json_negative_id_is_an_error_not_a_crash(tmp_path):
    d = broken_tokenizer(tmp_path, lambda j: j["model"]["vocab"].update({"zzz": -1}))
    expect_error(run("tokenize", "--tokenizer", d, "--text", "hi"), "vocabulary token 'zzz' has id -1",
                 str(d / "tokenizer.json"))


def test_tokenizer_json_merge_of_unknown_token(tmp_path):
    d = broken_tokenizer(tmp_path, lambda j: j["model"]["merges"].append(["qqq", "rrr"]))
    expect_error(run("tokenize", "--tokenizer", d, "--text", "hi"), "uses token 'qqq', which is not in the vocabulary")


def test_tokenizer_json_pre_tokenizer_of_the_wrong_type(tmp_path):
    d = broken_tokenizer(tmp_path, lambda j: j.update({"pre_tokenizer": ["ByteLevel"]}))
    expect_error(run("tokenize", "--tokenizer", d, "--text", "hi"), "'pre_tokenizer' must be an object")


def test_tokenizer_regex_match_limit(tmp_path):
    d = broken_tokenizer(tmp_path, lambda j: j.update(
        {"pre_tokenizer": {"type": "Split", "pattern": {"Regex": r"(\w+\s?)*$"}, "behavior": "Isolated",
                           "invert": False}}))
    expect_error(run("tokenize", "--tokenizer", d, "--text", "a " * 3 + "a" * 40 + "!"),
                 "the regex match limit was hit", r"pattern /(\w+\s?)*$/", "input text at byte")


def test_tokenizer_config_of_the_wrong_type(tmp_path):
    d = broken_tokenizer(tmp_path, lambda j: None)
    (d / "tokenizer_config.json").write_text(json.dumps({"bos_token": 5}))
    expect_error(run("tokenize", "--tokenizer", d, "--text", "hi"), "field 'bos_token' must be a string",
                 "tokenizer_config.json")


def chat_template_dir(tmp_path, template):
    d = tmp_path / "chat"
    d.mkdir()
    shutil.copy(TINY / "tokenizer.json", d)
    shutil.copy(TINY / "tokenizer_config.json", d)
    (d / "chat_template.jinja").write_text(template)
    m = tmp_path / "messages.json"
    m.write_text(json.dumps([{"role": "user", "content": "hi"}]))
    return d, m


@pytest.mark.parametrize("template,message", [
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "macro 'f' is called more than 100 levels deep"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "more than 1000000 loop iterations"),
    ("{{ " + "(" * 50000 + "1" + ")" * 50000 + " }}", "nests expressions more than 128 levels deep"),
    ("{% if true %}" * 50000 + "{% endif %}" * 50000, "nests blocks more than 128 levels deep"),
    ("{{ 'x' * 10**12 }}", "over the string size limit"),
    ("{{ 9223372036854775807 + 1 }}", "does not fit in 64 bits"),
])
def test_chat_template_limits(tmp_path, template, message):
    d, m = chat_template_dir(tmp_path, "hello\n" + template)
    res = run("chat-template", "--tokenizer", d, "--messages", m, timeout=60)
    assert res.returncode == 1, res.stderr
    assert message in res.stderr, res.stderr
    assert "line 2" in res.stderr, res.stderr


# ---------------------------------------------------------------- borderline files the tokenizers package accepts

tokenizers = pytest.importorskip("tokenizers")


def _added(i, content):
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
            "special": True}


@pytest.mark.parametrize("name,change", [
    ("sparse id 2^31", lambda j: j["model"]["vocab"].update({"zz": 2 ** 31})),
    ("id 2^32 - 1", lambda j: j["model"]["vocab"].update({"zz": 2 ** 32 - 1})),
    ("added ids are renumbered", lambda j: j["added_tokens"].extend([_added(100000, "<a>"), _added(7, "<b>")])),
    ("added token of the vocabulary", lambda j: j["added_tokens"].append(_added(99999, "hi"))),
    ("repeated and empty added tokens", lambda j: j["added_tokens"].extend([_added(5, "<a>"), _added(6, "<a>"),
                                                                             _added(7, "")])),
    ("repeated merge", lambda j: j["model"]["merges"].append(j["model"]["merges"][0])),
    ("string-form merges", lambda j: j["model"].update({"merges": [" ".join(m) for m in j["model"]["merges"]]})),
])
def test_borderline_tokenizer_json_gives_the_tokenizers_ids(tmp_path, name, change):
    d = broken_tokenizer(tmp_path, change)
    ref = tokenizers.Tokenizer.from_file(str(d / "tokenizer.json"))
    text = "hi there <a> zz <b> hi!\nhello world"
    res = run("tokenize", "--tokenizer", d, "--text", text)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == ref.encode(text).ids, name
