"""The automodel binary run as a user runs it."""
import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"


def run(*args):
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=600)


def test_bad_usage_is_a_clear_error():
    r = run("generate", "--model", "x", "--max-new-tokenz", "3")
    assert r.returncode == 1
    assert "unknown option --max-new-tokenz" in r.stderr
    r = run("generate", "--model", "x", "--prompt-ids", "1", "--max-new-tokens", "many")
    assert r.returncode == 1 and "needs an integer" in r.stderr
    r = run("frobnicate")
    assert r.returncode == 1 and "unknown command 'frobnicate'" in r.stderr
    r = run()
    assert r.returncode == 2 and "usage" in r.stderr
