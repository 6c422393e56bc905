"""Hostile or mistaken recipe YAML and --threads values, run through the automodel binary: each is a clear error
(exit 1, "error: ..." naming the file and line), never a crash, a hang or a silently changed config."""
import os
import pathlib
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"
RECIPE = ROOT / "examples" / "llm_finetune" / "tiny_llama_squad.yaml"


def run(*args, timeout=120):
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def finetune_yaml(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return run("finetune", "llm", "-c", path), str(path)


def test_a_section_given_twice_names_both_lines(tmp_path):
    text = RECIPE.read_text() + "\noptimizer:\n  _target_: torch.optim.SGD\n  lr: 0.1\n"
    r, path = finetune_yaml(tmp_path, text)
    first = 1 + RECIPE.read_text().splitlines().index("optimizer:")
    second = len(RECIPE.read_text().splitlines()) + 2
    assert r.returncode == 1, r.stderr
    assert f"{path}:{second}: key 'optimizer' is given twice, at lines {first} and {second}" in r.stderr


def test_a_key_given_twice_inside_a_section(tmp_path):
    r, path = finetune_yaml(tmp_path, "step_scheduler:\n  max_steps: 5\n  global_batch_size: 8\n  max_steps: 50\n")
    assert r.returncode == 1
    assert f"{path}:4: key 'step_scheduler.max_steps' is given twice, at lines 2 and 4" in r.stderr


@pytest.mark.parametrize("text", ["model: &m\n  sub: *m\n", "model: &m [1, *m]\n"])
def test_an_alias_cycle_is_an_error_not_a_crash(tmp_path, text):
    r, path = finetune_yaml(tmp_path, text)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "an anchor/alias cycle" in r.stderr and path in r.stderr


def test_billion_laughs_stops_quickly(tmp_path):
    text = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for i in range(1, 10):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n"
    start = time.monotonic()
    r, path = finetune_yaml(tmp_path, text)
    assert r.returncode == 1
    assert "expands to more than 1000000 values" in r.stderr and path in r.stderr
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("depth", [150, 100_000])
def test_deep_flow_nesting_is_an_error_not_a_stack_overflow(tmp_path, depth):
    r, path = finetune_yaml(tmp_path, "model: " + "[" * depth + "]" * depth + "\n")
    assert r.returncode == 1, (r.returncode, r.stderr[-500:])
    assert "lists and maps nested" in r.stderr and path in r.stderr


def test_a_huge_numeral_is_typed_not_a_crash(tmp_path):
    r, path = finetune_yaml(tmp_path, RECIPE.read_text().replace("max_steps: 200", "max_steps: " + "9" * 200_000))
    assert r.returncode == 1, (r.returncode, r.stderr[-500:])
    assert "'step_scheduler.max_steps': expected" in r.stderr


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "99999999999", "4097"])
def test_threads_is_one_positive_integer_rule_for_every_command(tmp_path, value):
    expected = f"--threads needs a positive integer up to 4096, got '{value}'"
    model = ROOT / "assets" / "tiny-llama"
    for args in (["generate", "--model", model, "--prompt-ids", "1,2", "--threads", value],
                 ["logprobs", "--model", model, "--prompt-ids", "1,2", f"--threads={value}"],
                 ["finetune", "llm", "-c", RECIPE, "--threads", value],
                 [RECIPE, f"--threads={value}"]):
        r = run(*args)
        assert r.returncode == 1, (args, r.stderr)
        assert expected in r.stderr, (args, r.stderr)


def test_a_valid_threads_value_runs():
    r = run("generate", "--model", ROOT / "assets" / "tiny-llama", "--prompt-ids", "1,2", "--max-new-tokens", "2",
            "--threads", "1")
    assert r.returncode == 0, r.stderr
