"""`automodel inspect / generate / logprobs` on tiny random models that transformers itself wrote,
compared with transformers' own generate() and logits."""
import json
import os
import pathlib
import shutil
import subprocess

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"

VOCAB = 1000
EOS = 999  # an id none of these models produces in the first 32 greedy steps (checked below)
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, eos_token_id=EOS)
FAMILIES = {
    # untied LM head, GQA
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=False)),
    # tied head, soft-capping, sliding window (8) shorter than prompt + continuation, query_pre_attn_scalar
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(head_dim=16, sliding_window=8, num_hidden_layers=3)),
    # q/k norms, explicit head_dim
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=16, tie_word_embeddings=False)),
}
PROMPTS = [[5, 17, 230, 41, 499, 8, 77, 310, 12, 640, 3, 99], [2]]
SEQUENCE = [2, 914, 5, 17, 230, 41, 499, 8, 77, 310, 12, 640, 3, 99, 0, 998, 451, 60, 7, 123]


def run(*args):
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=600)


def ids(xs):
    return ",".join(map(str, xs))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    if not BIN.exists():
        pytest.skip(f"{BIN} not built")
    out = {}
    for family, (config_cls, model_cls, extra) in FAMILIES.items():
        torch.manual_seed(0)
        config = getattr(transformers, config_cls)(**{**COMMON, **extra})
        model = getattr(transformers, model_cls)(config).eval()
        path = tmp_path_factory.mktemp(family)
        model.save_pretrained(path)
        out[family] = (path, model)
    return out


def reference_generate(model, prompt, n=32, **kwargs):
    x = torch.tensor([prompt])
    with torch.no_grad():
        y = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n,
                           output_logits=True, return_dict_in_generate=True, **kwargs)
    return y.sequences[0, len(prompt):].tolist(), [l[0] for l in y.logits]


def ours_generate(path, prompt, *extra):
    r = run("generate", "--model", path, "--prompt-ids", ids(prompt), *extra)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    return json.loads(lines[0])


def first_difference(ours, ref, logits):
    for i, (a, b) in enumerate(zip(ours, ref)):
        if a != b:
            top = logits[i].topk(2)
            return (f"first differing step {i}: ours {a}, transformers {b}; transformers' logits there: "
                    f"top-2 {top.indices.tolist()} margin {float(top.values[0] - top.values[1]):.3g}, "
                    f"logit[ours] - logit[theirs] = {float(logits[i][a] - logits[i][b]):.3g}")
    return f"lengths differ: ours {len(ours)}, transformers {len(ref)}"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prompt", PROMPTS, ids=["prompt12", "prompt1"])
def test_greedy_generation_matches_transformers(models, family, prompt):
    path, model = models[family]
    ref, logits = reference_generate(model, prompt)
    assert len(ref) == 32 and EOS not in ref  # no early stop on the transformers side
    ours = ours_generate(path, prompt, "--max-new-tokens", 32)
    assert ours == ref, first_difference(ours, ref, logits)


def test_generation_stops_at_eos_from_generation_config(models, tmp_path):
    path, model = models["llama"]
    prompt = PROMPTS[0]
    ref, _ = reference_generate(model, prompt)
    eos = ref[5]
    cut = ref.index(eos) + 1
    stop_ref, _ = reference_generate(model, prompt, eos_token_id=eos)
    assert stop_ref == ref[:cut]
    copy = tmp_path / "llama_eos"
    shutil.copytree(path, copy)
    gen_config = json.loads((copy / "generation_config.json").read_text())
    gen_config["eos_token_id"] = [EOS, eos]
    (copy / "generation_config.json").write_text(json.dumps(gen_config))
    assert ours_generate(copy, prompt) == stop_ref
    # without generation_config.json, config.json's eos (999, never produced) rules: all 32 tokens
    (copy / "generation_config.json").unlink()
    assert ours_generate(copy, prompt) == ref


def test_sampling_is_seeded(models):
    path, model = models["llama"]
    prompt = PROMPTS[0]
    a = ours_generate(path, prompt, "--temperature", "1.0", "--seed", 7, "--max-new-tokens", 16)
    b = ours_generate(path, prompt, "--temperature", "1.0", "--seed", 7, "--max-new-tokens", 16)
    c = ours_generate(path, prompt, "--temperature", "1.0", "--seed", 8, "--max-new-tokens", 16)
    assert len(a) == 16 and a == b and a != c
    ref, _ = reference_generate(model, prompt, n=16)
    assert ours_generate(path, prompt, "--top-k", 1, "--seed", 3, "--max-new-tokens", 16) == ref
    assert ours_generate(path, prompt, "--top-p", "1e-6", "--seed", 3, "--max-new-tokens", 16) == ref
    assert ours_generate(path, prompt, "--max-new-tokens", 0) == []


def reference_logprobs(model, tokens, dtype=torch.float32):
    with torch.no_grad():
        logits = model.to(dtype)(torch.tensor([tokens])).logits[0].float()
    model.to(torch.float32)
    lp = torch.log_softmax(logits, -1)
    return torch.tensor([float(lp[i, tokens[i + 1]]) for i in range(len(tokens) - 1)], dtype=torch.float64)


def ours_logprobs(path, tokens, *extra):
    r = run("logprobs", "--model", path, "--prompt-ids", ids(tokens), *extra)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tokens"] == tokens
    assert len(out["logprobs"]) == len(tokens) - 1
    return torch.tensor(out["logprobs"], dtype=torch.float64)


@pytest.mark.parametrize("family", FAMILIES)
def test_logprobs_match_transformers(models, family):
    path, model = models[family]
    ref = reference_logprobs(model, SEQUENCE)
    ours = ours_logprobs(path, SEQUENCE)
    err = float((ours - ref).abs().max() / ref.abs().max())
    assert err <= 1e-5, f"{family}: rel err {err:.3g}"


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_logprobs_are_close(models, family):
    path, model = models[family]
    ref = reference_logprobs(model, SEQUENCE)
    ours = ours_logprobs(path, SEQUENCE, "--dtype", "bf16")
    err = float((ours - ref).abs().max() / ref.abs().max())
    assert err <= 2e-2, f"{family} bf16: rel err {err:.3g} against fp32 transformers"
    assert len(ours_generate(path, PROMPTS[0], "--dtype", "bf16", "--max-new-tokens", 4)) == 4


def unique_numel(model):
    seen, total = set(), 0
    for t in model.state_dict().values():
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel()
    return total


@pytest.mark.parametrize("family", FAMILIES)
def test_inspect(models, family):
    path, model = models[family]
    n = model.num_parameters()
    assert n == unique_numel(model)
    config = model.config
    r = run("inspect", path, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["model_type"] == family
    assert info["architecture"] == FAMILIES[family][1]
    assert info["num_parameters"] == n
    assert info["num_hidden_layers"] == config.num_hidden_layers
    assert info["hidden_size"] == 64 and info["vocab_size"] == VOCAB and info["intermediate_size"] == 128
    assert info["num_attention_heads"] == 4 and info["num_key_value_heads"] == 2
    assert info["head_dim"] == config.head_dim
    assert info["tie_word_embeddings"] == bool(config.tie_word_embeddings)
    assert info["dtype_saved"] == "float32" and info["dtype_loaded"] == "f32"
    if family == "gemma2":
        assert info["sliding_windows"] == [8 if t == "sliding_attention" else 0 for t in config.layer_types]

    r = run("inspect", "--model", path)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert f"model_type               {family}" in text
    assert f"parameters               {n} (trainable {n})" in text
    assert f"layers                   {config.num_hidden_layers}\n" in text
    assert "float32 as saved, f32 as loaded" in text
    r = run("inspect", path, "--dtype", "bf16", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["dtype_loaded"] == "bf16", r.stderr


def expect_error(r, *fragments):
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("error: "), r.stderr
    for f in fragments:
        assert f in r.stderr, r.stderr


def test_errors(models, tmp_path):
    path, _ = models["llama"]
    missing = tmp_path / "no_such_model"
    expect_error(run("generate", "--model", missing, "--prompt-ids", "1,2"), str(missing))
    expect_error(run("inspect", missing), str(missing))
    expect_error(run("logprobs", "--model", missing, "--prompt-ids", "1,2"), str(missing))
    expect_error(run("generate", "--prompt-ids", "1,2"), "needs --model")
    expect_error(run("inspect"), "needs a model directory")
    expect_error(run("generate", "--model", path, "--prompt-ids", "1,x,3"), "element 1 ('x')", "--prompt-ids 1,")
    expect_error(run("generate", "--model", path, "--prompt-ids", "1,-2"), "element 1 ('-2')")
    expect_error(run("generate", "--model", path, "--prompt-ids", "1,,2"), "element 1 ('')")
    expect_error(run("generate", "--model", path, "--prompt-ids", f"1,{VOCAB}"), f"token id {VOCAB}",
                 "vocabulary of 1000 tokens")
    expect_error(run("logprobs", "--model", path, "--prompt-ids", "1,2.5"), "element 1 ('2.5')")
    expect_error(run("logprobs", "--model", path, "--prompt-ids", "7"), "at least 2 ids")
    expect_error(run("generate", "--model", path, "--prompt", "Hello world"), "tokenizer", "--prompt-ids")
    expect_error(run("generate", "--model", path), "needs a prompt")
    expect_error(run("generate", "--model", path, "--prompt-ids", "1", "--dtype", "f8"), "unknown --dtype 'f8'")
    expect_error(run("generate", "--model", path, "--prompt-ids", "1", "--temperature", "0"), "--temperature must be > 0")
    expect_error(run("generate", "--model", path, "--prompt-ids", "1", "--top-p", "2"), "--top-p must be in (0, 1]")
    expect_error(run("generate", "--model", path, "--prompt-ids", "1", "--max-new-tokens", "-1"), ">= 0")
    expect_error(run("generate", "--model", path, "--prompt-ids", "1", "--frobnicate", "3"), "unknown option --frobnicate")

    # a directory that is not a model, a truncated weights file, an unknown architecture
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error(run("inspect", empty), "config.json")
    broken = tmp_path / "truncated"
    shutil.copytree(path, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    expect_error(run("inspect", broken), "model.safetensors")
    expect_error(run("generate", "--model", broken, "--prompt-ids", "1,2"), "model.safetensors")
    alien = tmp_path / "alien"
    shutil.copytree(path, alien)
    config = json.loads((alien / "config.json").read_text())
    config["model_type"] = "bert"
    (alien / "config.json").write_text(json.dumps(config))
    expect_error(run("inspect", alien), "bert", "llama")


def test_text_prompt_uses_the_model_tokenizer(models, tmp_path):
    """--prompt TEXT: encoded with the directory's tokenizer.json, continuation printed as text, the same as
    transformers' tokenizer + generate + decode."""
    tokenizers = pytest.importorskip("tokenizers")
    path, model = models["llama"]
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog, déjà vu 123"] * 8, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>")
    with_tok = tmp_path / "llama_with_tokenizer"
    shutil.copytree(path, with_tok)
    fast.save_pretrained(with_tok)
    text = "the lazy fox, déjà"
    prompt = fast(text)["input_ids"]
    ref, _ = reference_generate(model, prompt, n=12)
    r = run("generate", "--model", with_tok, "--prompt", text, "--max-new-tokens", 12)
    assert r.returncode == 0, r.stderr
    assert r.stdout == fast.decode(ref, skip_special_tokens=True) + "\n"
