"""Dataset files as users have them: JSON lines plain, gzip- and zstd-compressed, Parquet (as HF datasets writes
it, with nested struct/list columns), HF's data/<split>-NNNNN-of-NNNNN layout; records read when used; warnings for
samples longer than seq_length (without truncation) or max_position_embeddings; `automodel dataset` shows them."""
import gzip
import json
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"
SQUAD = ROOT / "assets" / "tiny-squad" / "train.jsonl"
MODEL = ROOT / "assets" / "tiny-llama"


def rows(n=40):
    return [json.loads(line) for line in SQUAD.read_text().splitlines()[:n]]


def recipe(tmp_path, data, **dataset):
    extra = "".join(f"  {k}: {v}\n" for k, v in dataset.items())
    r = tmp_path / "recipe.yaml"
    r.write_text(f"model:\n  pretrained_model_name_or_path: {MODEL}\n"
                 f"dataset:\n  _target_: nemo_automodel.components.datasets.llm.squad.make_squad_dataset\n"
                 f"  dataset_name: {data}\n{extra}")
    return r


def run(*args, cache):
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "AUTOMODEL_CACHE_DIR": str(cache)})


def samples(tmp_path, data, *extra, **dataset):
    r = run("dataset", "-c", recipe(tmp_path, data, **dataset), *extra, cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()], r.stderr


@pytest.fixture
def plain(tmp_path):
    p = tmp_path / "squad.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    return samples(tmp_path, p)[0]


def test_compressed_json_lines_give_the_same_samples(tmp_path, plain):
    gz = tmp_path / "squad.jsonl.gz"
    gz.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows()).encode()))
    assert samples(tmp_path, gz)[0] == plain
    if shutil.which("zstd"):
        zst = tmp_path / "squad.jsonl.zst"
        subprocess.run(["zstd", "-q", "-o", str(zst), str(tmp_path / "squad.jsonl")], check=True)
        assert samples(tmp_path, zst)[0] == plain
    arr = tmp_path / "squad.json.gz"
    arr.write_bytes(gzip.compress(json.dumps({"data": rows()}).encode()))
    assert samples(tmp_path, arr)[0] == plain


def test_parquet_as_hf_datasets_writes_it(tmp_path, plain):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.Table.from_pylist(rows())  # answers: struct<text: list<string>, answer_start: list<int64>>
    assert pa.types.is_struct(table.schema.field("answers").type)
    d = tmp_path / "hub_layout" / "data"
    d.mkdir(parents=True)
    pq.write_table(table.slice(0, 25), d / "train-00000-of-00002.parquet", row_group_size=10)
    pq.write_table(table.slice(25), d / "train-00001-of-00002.parquet", compression="zstd")
    pq.write_table(table.slice(0, 3), d / "validation-00000-of-00001.parquet")
    r = run("dataset", "-c", recipe(tmp_path, d.parent), cache=tmp_path / "cache")
    if "this automodel build reads no Parquet" in r.stderr:
        pytest.skip("built without Apache Arrow")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line) for line in r.stdout.splitlines()] == plain
    val, _ = samples(tmp_path, d.parent, split="validation")
    assert val == plain[:3]


def test_bad_files_are_clear_errors(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet PAR1")
    r = run("dataset", "-c", recipe(tmp_path, bad), cache=tmp_path / "cache")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "broken.parquet" in r.stderr and ("Parquet" in r.stderr or "parquet" in r.stderr), r.stderr
    gz = tmp_path / "cut.jsonl.gz"
    gz.write_bytes(gzip.compress(SQUAD.read_bytes())[:500])
    r = run("dataset", "-c", recipe(tmp_path, gz), cache=tmp_path / "cache")
    assert r.returncode == 1 and "truncated gzip" in r.stderr and "cut.jsonl.gz" in r.stderr, r.stderr


def test_a_bad_record_is_found_when_it_is_read_and_named_by_line(tmp_path):
    lines = [json.dumps(r) for r in rows(5)] + ['{"context": "c", "question": "q"}']
    p = tmp_path / "squad.jsonl"
    p.write_text("\n".join(lines) + "\n")
    r = run("dataset", "-c", recipe(tmp_path, p), "--limit", "5", cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    r = run("dataset", "-c", recipe(tmp_path, p), cache=tmp_path / "cache")
    assert r.returncode == 1
    assert "squad.jsonl:6 [record 5]" in r.stderr and "no column 'answers'" in r.stderr, r.stderr


def test_long_samples_are_kept_and_warned_about(tmp_path):
    p = tmp_path / "squad.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows(3)))
    got, err = samples(tmp_path, p, seq_length=16)
    assert all(len(s["input_ids"]) > 16 for s in got)
    assert "more than dataset.seq_length" in err and "truncation is off, so it is kept whole" in err, err
    assert err.count("warning:") == 1
    got, err = samples(tmp_path, p, seq_length=4096)
    assert "warning" not in err, err


def test_finetune_warns_about_samples_past_max_position_embeddings(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(MODEL, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["max_position_embeddings"] = 32
    (model / "config.json").write_text(json.dumps(cfg))
    r = run("finetune", "llm", "-c", ROOT / "examples" / "llm_finetune" / "tiny_llama_squad.yaml", "--threads", "2",
            "--model.pretrained_model_name_or_path", model, "--step_scheduler.max_steps", 2, "--lr_scheduler.lr_warmup_steps", 0,
            "--checkpoint.enabled", "false", "--checkpoint.checkpoint_dir", tmp_path / "ck", cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert "more than max_position_embeddings (32)" in r.stderr, r.stderr
