"""The automodel binary run as a user runs it."""
import os
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"


def run(*args):
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=600)


def losses(stdout):
    return [float(m.group(1)) for m in re.finditer(r"^\s*\d+\s+([0-9.]+)\s+\d+$", stdout, re.M)]


def test_demo_loss_falls():
    r = run("demo", "--steps", "120", "--threads", "2")
    assert r.returncode == 0, r.stderr
    ls = losses(r.stdout)
    assert len(ls) >= 5, r.stdout
    assert ls[0] > 3.5  # ~ln(64) at random init
    assert ls[-1] < 0.6 * ls[0], r.stdout


def test_demo_with_checkpointing_matches_without():
    plain = run("demo", "--steps", "21", "--seed", "3")
    ckpt = run("demo", "--steps", "21", "--seed", "3", "--checkpoint")
    assert plain.returncode == 0 and ckpt.returncode == 0, plain.stderr + ckpt.stderr
    assert losses(plain.stdout) == losses(ckpt.stdout)


def test_bad_usage_is_a_clear_error():
    r = run("demo", "--stepz", "3")
    assert r.returncode == 1
    assert "unknown option --stepz" in r.stderr
    r = run("demo", "--steps", "many")
    assert r.returncode == 1 and "needs an integer" in r.stderr
    r = run("frobnicate")
    assert r.returncode == 1 and "unknown command 'frobnicate'" in r.stderr
    r = run()
    assert r.returncode == 2 and "usage" in r.stderr
