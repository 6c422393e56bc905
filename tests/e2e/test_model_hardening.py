"""Bad model inputs through the `automodel` binary: every class is a clear `error:` (what, where, what to do) with
exit status 1 — never a signal, a hang, a raw library message or silently wrong output. Inputs are copies of the
embedded tiny Llama (assets/tiny-llama) with one thing broken."""
import hashlib
import json
import math
import os
import pathlib
import shutil
import subprocess

import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"
BASE = ROOT / "assets" / "tiny-llama"
RECIPE = ROOT / "examples" / "llm_finetune" / "tiny_llama_squad.yaml"


@pytest.fixture(autouse=True)
def _built():
    if not BIN.exists():
        pytest.skip(f"{BIN} not built")


def run(*args, timeout=300):
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def expect_error(r, *fragments):
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") or "\nerror: " in r.stderr, r.stderr
    assert "what to do:" in r.stderr, r.stderr
    for f in fragments:
        assert str(f) in r.stderr, (f, r.stderr)


def model_copy(tmp_path, name, config_update=None, tensors=None):
    """assets/tiny-llama copied to tmp_path/name, config.json updated and model.safetensors tensors replaced."""
    d = tmp_path / name
    shutil.copytree(BASE, d)
    if config_update:
        config = json.loads((d / "config.json").read_text())
        config.update(config_update)
        (d / "config.json").write_text(json.dumps(config))
    if tensors:
        weights = safetensors_torch.load_file(d / "model.safetensors")
        weights.update(tensors(weights))
        safetensors_torch.save_file(weights, d / "model.safetensors", metadata={"format": "pt"})
    return d


def finetune(model_dir, tmp_path):
    return run("finetune", "llm", "-c", RECIPE, "--model.pretrained_model_name_or_path", model_dir,
               "--checkpoint.checkpoint_dir", tmp_path / "ckpt", "--step_scheduler.max_steps", 2,
               "--step_scheduler.val_every_steps", 100, "--threads", 2)


def digest(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(pathlib.Path(d).iterdir())}


# ---- config.json --------------------------------------------------------------------------------------------

BAD_CONFIGS = {
    "kv_heads_zero": ({"num_key_value_heads": 0}, ["'num_key_value_heads'", "positive integer"]),
    "kv_heads_not_dividing": ({"num_key_value_heads": 3}, ["'num_key_value_heads'", "multiple"]),
    "fractional_hidden": ({"hidden_size": 64.5}, ["'hidden_size'", "must be an integer", "64.5"]),
    "string_layers": ({"num_hidden_layers": "2"}, ["'num_hidden_layers'", "must be an integer"]),
    "odd_head_dim": ({"head_dim": 15}, ["'head_dim'", "rotary dimension of 15"]),
    "zero_eps": ({"rms_norm_eps": 0}, ["'rms_norm_eps'", "positive"]),
    "zero_max_positions": ({"max_position_embeddings": 0}, ["'max_position_embeddings'"]),
    "bad_rope_factor": ({"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4, "factor": 0}},
                        ["'rope_parameters.factor'"]),
    "unknown_rope": ({"rope_parameters": {"rope_type": "proportional", "factor": 4.0}},
                     ["'proportional' is not supported", "yarn"]),
    "bad_yarn": ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0, "beta_slow": -1.0,
                                      "original_max_position_embeddings": 128}}, ["'rope_parameters.beta_slow'"]),
    "pad_beyond_vocab": ({"pad_token_id": 512}, ["'pad_token_id'", "[0, 512)"]),
    "vocab_overflows": ({"vocab_size": 2**62}, ["'vocab_size'", str(2**62), "overflows"]),
    "vocab_beyond_memory": ({"vocab_size": 2**40}, ["'vocab_size'", "physical memory", "bytes", "TiB"]),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_a_named_error_in_every_command(case, tmp_path):
    update, fragments = BAD_CONFIGS[case]
    d = model_copy(tmp_path, case, update)
    where = d / "config.json"
    expect_error(run("inspect", d), *fragments, where)
    expect_error(run("generate", "--model", d, "--prompt-ids", "1,2", "--max-new-tokens", 2), *fragments, where)
    expect_error(run("logprobs", "--model", d, "--prompt-ids", "1,2"), *fragments, where)
    r = finetune(d, tmp_path)
    expect_error(r, *fragments, where)
    assert "batch size" not in r.stderr


def test_configs_transformers_tolerates_load_with_a_warning(tmp_path):
    d = model_copy(tmp_path, "hub_quirks", {"pad_token_id": -1, "eos_token_id": [1, 600]})
    r = run("inspect", d)
    assert r.returncode == 0, r.stderr
    assert "pad_token_id -1 is outside the vocabulary" in r.stderr
    assert "eos_token_id 600 is outside the vocabulary" in r.stderr


# ---- weights ------------------------------------------------------------------------------------------------

def with_nan(name, index=7):
    def change(weights):
        t = weights[name].clone()
        t.view(-1)[index] = float("nan")
        return {name: t}
    return change


def test_non_finite_weights_are_refused_naming_tensor_and_file(tmp_path):
    tensor = "model.layers.1.mlp.up_proj.weight"
    d = model_copy(tmp_path, "nan_weights", tensors=with_nan(tensor))
    fragments = [tensor, d / "model.safetensors", "non-finite", "element 7 = nan"]
    expect_error(run("generate", "--model", d, "--prompt-ids", "1,2"), *fragments)
    expect_error(run("logprobs", "--model", d, "--prompt-ids", "1,2"), *fragments)
    expect_error(run("inspect", d), *fragments)
    expect_error(finetune(d, tmp_path), *fragments)


def test_integer_tensor_is_not_converted_to_float_weights(tmp_path):
    d = model_copy(tmp_path, "int_weights",
                   tensors=lambda w: {"model.norm.weight": torch.ones(64, dtype=torch.int32)})
    expect_error(run("generate", "--model", d, "--prompt-ids", "1,2"), "model.norm.weight", "I32", "integer type")


def overflowing_model(tmp_path):
    """Finite weights whose logits overflow f32: an untied LM head of 3e38 after a final norm of 1000."""
    return model_copy(tmp_path, "overflow", {"tie_word_embeddings": False},
                      tensors=lambda w: {"lm_head.weight": torch.full((512, 64), 3e38),
                                         "model.norm.weight": torch.full((64,), 1000.0)})


def test_non_finite_logits_are_an_error_not_output(tmp_path):
    d = overflowing_model(tmp_path)
    r = run("generate", "--model", d, "--prompt-ids", "1,2,3")
    expect_error(r, "non-finite logit", "position 2", "--dtype f32")
    assert r.stdout == ""
    r = run("logprobs", "--model", d, "--prompt-ids", "1,2,3")
    expect_error(r, "non-finite logit")
    assert "NaN" not in r.stdout and "Infinity" not in r.stdout


def test_logprobs_output_is_strict_json():
    r = run("logprobs", "--model", BASE, "--prompt-ids", "0,57,301,12,88")

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout, parse_constant=refuse)
    assert len(out["logprobs"]) == 4 and all(math.isfinite(x) and x <= 0 for x in out["logprobs"])


# ---- command line -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("file", ["model.safetensors", "config.json"])
def test_inspect_a_file_says_to_pass_the_directory(file):
    r = run("inspect", BASE / file)
    expect_error(r, "is a file, not a model directory", f"automodel inspect {BASE}")
    assert "not found" not in r.stderr
    expect_error(run("generate", "--model", BASE / file, "--prompt-ids", "1"), f"--model {BASE}")


def test_token_id_beyond_the_model_vocab_is_blamed_on_the_tokenizer(tmp_path):
    """A tokenizer with a larger vocabulary than the model: the error names the tokenizer, the id and its text."""
    tokenizers = pytest.importorskip("tokenizers")
    d = model_copy(tmp_path, "small_vocab", {"vocab_size": 100},
                   tensors=lambda w: {"model.embed_tokens.weight": w["model.embed_tokens.weight"][:100].clone()})
    text = "Where is the town hall?"
    ids = tokenizers.Tokenizer.from_file(str(BASE / "tokenizer.json")).encode(text).ids
    first = next(i for i in ids if i >= 100)
    r = run("generate", "--model", d, "--prompt", text)
    expect_error(r, "the tokenizer encoded --prompt into token id", f"id {first} ", "vocabulary of 100 tokens",
                 "tokenizer.json")
    assert "--prompt-ids:" not in r.stderr


# ---- adapters and merge-lora --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A peft LoRA adapter for tiny-llama with non-zero B (so merging changes the weights)."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    base = transformers.AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    d = tmp_path_factory.mktemp("adapter")
    peft.get_peft_model(base, config).save_pretrained(d)
    return d


def adapter_copy(adapter, tmp_path, config_update=None, tensors=None):
    d = tmp_path / "adapter_copy"
    shutil.copytree(adapter, d)
    if config_update:
        config = json.loads((d / "adapter_config.json").read_text())
        config.update(config_update)
        (d / "adapter_config.json").write_text(json.dumps(config))
    if tensors:
        weights = safetensors_torch.load_file(d / "adapter_model.safetensors")
        weights.update(tensors(weights))
        safetensors_torch.save_file(weights, d / "adapter_model.safetensors", metadata={"format": "pt"})
    return d


def merge(base, adapter, out):
    return run("merge-lora", "--base", base, "--adapter", adapter, "--out", out)


@pytest.mark.parametrize("update,fragments", [
    ({"lora_alpha": "thirty-two"}, ["'lora_alpha'", "a finite number", '"thirty-two"']),
    ({"r": 0}, ["'r'", "positive integer"]),
    ({"r": 4.0}, ["'r'", "positive integer"]),
    ({"use_rslora": "false"}, ["'use_rslora'", "true or false"]),
    ({"lora_dropout": 2}, ["'lora_dropout'", "[0, 1)"]),
    ({"rank_pattern": {"q_proj": "four"}}, ["rank_pattern.q_proj"]),
])
def test_adapter_config_values_are_typed(adapter, tmp_path, update, fragments):
    a = adapter_copy(adapter, tmp_path, update)
    r = merge(BASE, a, tmp_path / "merged")
    expect_error(r, *fragments, a / "adapter_config.json")
    assert "json.exception" not in r.stderr
    assert not (tmp_path / "merged").exists()


def test_merge_lora_refuses_a_non_finite_adapter_or_result(adapter, tmp_path):
    name = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"
    a = adapter_copy(adapter, tmp_path, tensors=with_nan(name, 3))
    expect_error(merge(BASE, a, tmp_path / "merged"), name, a / "adapter_model.safetensors", "non-finite")
    assert not (tmp_path / "merged").exists()
    # finite factors whose product overflows f32
    shutil.rmtree(a)
    a = adapter_copy(adapter, tmp_path, tensors=lambda w: {k: torch.full_like(v, 1e30) for k, v in w.items()})
    expect_error(merge(BASE, a, tmp_path / "merged"), "the merged model", "q_proj.weight", "non-finite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_copy"]  # no output, no staging left


def test_merge_lora_never_writes_into_its_inputs(adapter, tmp_path):
    base = tmp_path / "models" / "base"
    shutil.copytree(BASE, base)
    (tmp_path / "base_link").symlink_to(base)
    before = digest(base)
    for out, relation in [
        (base, "is the same directory as --base"),
        (base / "merged", "lies inside --base"),
        (tmp_path / "models", "contains --base"),
        (tmp_path / "base_link", "is the same directory as --base"),  # a symlink to the base
        (tmp_path / "base_link" / "sub", "lies inside --base"),
        (adapter, "is the same directory as --adapter"),
        (adapter / "merged", "lies inside --adapter"),
    ]:
        expect_error(merge(base, adapter, out), relation, "--out")
    expect_error(merge(tmp_path / "base_link", adapter, base / "x"), "lies inside --base")
    assert digest(base) == before
    assert not (base / "merged").exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    expect_error(merge(base, adapter, taken), "already exists", "not empty")
    assert (taken / "notes.txt").read_text() == "keep me"


def test_merge_lora_publishes_the_output_whole(adapter, tmp_path):
    out = tmp_path / "out" / "merged"
    stale = tmp_path / "out" / ".merged.staging-12345"  # left by a merge that was killed
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"partial")
    r = merge(BASE, adapter, out)
    assert r.returncode == 0, r.stderr
    assert {"config.json", "model.safetensors", "generation_config.json"} <= {p.name for p in out.iterdir()}
    assert [p.name for p in out.parent.iterdir()] == ["merged"]  # no staging directory left behind
    # the merged weights differ from the base's where the adapter applies, and only there
    merged = safetensors_torch.load_file(out / "model.safetensors")
    base = safetensors_torch.load_file(BASE / "model.safetensors")
    changed = sorted(k for k in base if not torch.equal(base[k], merged[k]))
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed), changed
    empty = tmp_path / "empty"
    empty.mkdir()
    assert merge(BASE, adapter, empty).returncode == 0  # an empty directory may be the output
