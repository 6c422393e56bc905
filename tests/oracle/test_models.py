"""models/ against transformers: for a tiny random model of every supported family (tiny_models.py, created and
saved by transformers itself), ours loads the directory and must give transformers' logits, loss and every
parameter gradient on a padded batch with -100 labels; logits from inputs_embeds; bf16 logits; greedy generation;
a directory we save loads in transformers (and ours) with identical logits, sharded or not, keeping config.json's
unknown keys; bad directories are clear errors.

Tolerances (relative to the reference's largest magnitude, see conftest.rel_err): fp32 logits 1e-5, loss 1e-6,
gradients 1e-4; bf16 logits 3e-2 against transformers in bf16, and no further from fp32 than transformers'
bf16 run is (x 1.25 + 5e-3)."""
import json
import re
import shutil

import numpy as np
import pytest
import safetensors.torch
import torch
import transformers

import tiny_models as tm
from conftest import OpError, rel_err, run_op

LOGITS_F32, LOSS_F32, GRAD_F32, LOGITS_BF16 = 1e-5, 1e-6, 1e-4, 3e-2
T = 20
VARIANTS = list(tm.VARIANTS)
SUPPORTED = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "qwen3_moe", "mixtral",
             "gpt_oss"]

# Largest errors seen, per variant and check; printed at the end of the session (pytest -s).
ERRORS = {}


@pytest.fixture(scope="session", autouse=True)
def _report():
    yield
    if ERRORS:
        checks = sorted({k for v in ERRORS.values() for k in v})
        print("\n\nmodels oracle, largest relative errors:")
        print(f"{'variant':36s}" + "".join(f"{c:>16s}" for c in checks))
        for name in sorted(ERRORS):
            row = "".join(f"{ERRORS[name][c]:16.2e}" if c in ERRORS[name] else f"{'-':>16s}" for c in checks)
            print(f"{name:36s}" + row)


def _record(name, check, err):
    ERRORS.setdefault(name, {})[check] = err
    return err


def _batch():
    """3 rows of T tokens: full; right-padded (13 tokens); left-padded (4 pads). Pads are pad_token_id, and one
    real token is pad_token_id too (transformers' nn.Embedding(padding_idx) gives that row no gradient). Labels
    are -100 on pads and on some prompt positions."""
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(4, tm.VOCAB, (3, T), generator=g)
    mask = torch.ones(3, T, dtype=torch.int64)
    mask[1, 13:] = 0
    mask[2, :4] = 0
    ids[mask == 0] = tm.PAD
    ids[0, 9] = tm.PAD
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[0, :5] = -100
    labels[1, :3] = -100
    labels[2, 4:7] = -100
    return ids, mask, labels


# Kernel choices (model.use_liger_kernel / attn_implementation): ours fused with flash attention, and
# transformers' eager composition of primitive ops with materialised attention.
KERNELS = {"fused": {}, "eager": {"fused": False, "flash_attention": False}}


def _ours(model_dir, tmp_path, ids, mask=None, labels=None, dtype="f32", checkpoint_layers=False, kernels="fused"):
    """(logits, loss, {name: grad}) from our runner; loss and grads only with labels."""
    inputs = {"input_ids": ids.numpy()}
    if mask is not None:
        inputs["attention_mask"] = mask.numpy()
    names_out = tmp_path / "param_names.json"
    params = {"model_dir": str(model_dir), "dtype": dtype, "names_out": str(names_out), **KERNELS[kernels]}
    if checkpoint_layers:
        params["checkpoint_layers"] = True
    if labels is not None:
        inputs["labels"] = labels.numpy()
    r = run_op("causal_lm", inputs, params)
    if labels is None:
        return r.outputs[0], None, None
    names = json.loads(names_out.read_text())
    assert len(names) == len(r.outputs) - 2
    return r.outputs[0], float(r.outputs[1]), dict(zip(names, r.outputs[2:]))


def _reference(model_dir, ids, mask, labels=None, dtype=torch.float32):
    model = tm.load_reference(model_dir, dtype)
    if labels is None:
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask).logits.float(), None, None
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return out.logits.detach().float(), out.loss.detach(), grads


def _masked(x, mask):
    """Logits at real (non-pad) positions only, [N, vocab]."""
    m = mask.numpy().astype(bool)
    return x[m] if isinstance(x, np.ndarray) else x[torch.from_numpy(m)]


# ---- fp32: logits, loss, every gradient ------------------------------------------------------------------


@pytest.mark.parametrize("kernels", list(KERNELS))
@pytest.mark.parametrize("name", VARIANTS)
def test_fp32_logits_loss_and_gradients_match_transformers(name, kernels, model_dir, tmp_path):
    d = model_dir(name)
    ids, mask, labels = _batch()
    ref_logits, ref_loss, ref_grads = _reference(d, ids, mask, labels)
    logits, loss, grads = _ours(d, tmp_path, ids, mask, labels, kernels=kernels)
    name = f"{name}/{kernels}"

    assert logits.shape == tuple(ref_logits.shape)
    e_logits = _record(name, "logits", rel_err(_masked(logits, mask), _masked(ref_logits, mask)))
    e_loss = _record(name, "loss", abs(loss - ref_loss.item()) / abs(ref_loss.item()))
    assert set(grads) == set(ref_grads), (
        f"parameter names differ: ours only {sorted(set(grads) - set(ref_grads))}, "
        f"transformers only {sorted(set(ref_grads) - set(grads))}"
    )
    grad_errs = {n: rel_err(grads[n], ref_grads[n]) for n in ref_grads}
    worst = max(grad_errs, key=grad_errs.get)
    _record(name, "grad", grad_errs[worst])

    assert e_logits <= LOGITS_F32, f"{name}: logits relative error {e_logits:.3e}"
    assert e_loss <= LOSS_F32, f"{name}: loss {loss!r} vs {ref_loss.item()!r} (relative {e_loss:.3e})"
    bad = {n: f"{e:.2e}" for n, e in grad_errs.items() if e > GRAD_F32}
    assert not bad, f"{name}: gradients over {GRAD_F32:.0e}: {bad}"


@pytest.mark.parametrize("name", ["llama_gqa_bias_llama3", "gemma2_softcap_sliding", "phi3_longrope_long"])
def test_checkpointed_layers_give_the_same_gradients(name, model_dir, tmp_path):
    d = model_dir(name)
    ids, mask, labels = _batch()
    logits, loss, grads = _ours(d, tmp_path, ids, mask, labels)
    c_logits, c_loss, c_grads = _ours(d, tmp_path, ids, mask, labels, checkpoint_layers=True)
    np.testing.assert_array_equal(c_logits, logits)
    assert c_loss == loss
    for n, g in grads.items():
        assert rel_err(c_grads[n], g) <= 1e-6, n


@pytest.mark.parametrize("name", ["llama_gqa_bias_llama3", "gemma_tied", "gemma2_softcap_sliding"])
def test_inputs_embeds_are_used_as_given_like_transformers(name, model_dir):
    """transformers applies Gemma's sqrt(hidden_size) in the embedding module, so inputs_embeds are not scaled."""
    d = model_dir(name)
    _, mask, _ = _batch()
    hidden = json.loads((d / "config.json").read_text())["hidden_size"]
    embeds = torch.randn(3, T, hidden, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = tm.load_reference(d)(inputs_embeds=embeds, attention_mask=mask).logits.float()
    r = run_op("causal_lm", {"inputs_embeds": embeds.numpy(), "attention_mask": mask.numpy()}, {"model_dir": str(d)})
    err = _record(name, "inputs_embeds", rel_err(_masked(r.outputs[0], mask), _masked(ref, mask)))
    assert err <= LOGITS_F32, f"{name}: logits from inputs_embeds, relative error {err:.3e}"


# ---- bf16 ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernels", list(KERNELS))
@pytest.mark.parametrize("name", VARIANTS)
def test_bf16_logits_match_transformers_bf16(name, kernels, model_dir, tmp_path):
    d = model_dir(name)
    ids, mask, _ = _batch()
    ref_bf16, _, _ = _reference(d, ids, mask, dtype=torch.bfloat16)
    ref_f32, _, _ = _reference(d, ids, mask)
    logits, _, _ = _ours(d, tmp_path, ids, mask, dtype="bf16", kernels=kernels)
    name = f"{name}/{kernels}"
    err = _record(name, "bf16", rel_err(_masked(logits, mask), _masked(ref_bf16, mask)))
    # Two bf16 runs differ by two roundings' worth of noise, so ours is also held to fp32: no further
    # from it than transformers' own bf16 run (plus a margin).
    ours_f32 = _record(name, "bf16_vs_f32", rel_err(_masked(logits, mask), _masked(ref_f32, mask)))
    hf_f32 = _record(name, "hf_bf16_vs_f32", rel_err(_masked(ref_bf16.numpy(), mask), _masked(ref_f32, mask)))
    assert err <= LOGITS_BF16, f"{name}: bf16 logits relative error {err:.3e} against transformers bf16"
    assert ours_f32 <= 1.25 * hf_f32 + 5e-3, f"{name}: bf16 vs fp32 {ours_f32:.3e}, transformers' {hf_f32:.3e}"


# ---- generation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_greedy_generation_is_token_identical(name, model_dir):
    d = model_dir(name)
    prompt = torch.tensor([[1, 17, 923, 45, 310, 7, 88, 501]])
    model = tm.load_reference(d)
    with torch.no_grad():
        ref = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=32)
    ref = ref[0, prompt.shape[1] :].tolist()
    r = run_op("generate", {"prompt": prompt[0].numpy()}, {"model_dir": str(d), "max_new_tokens": 32})
    ours = r.outputs[0].tolist()
    first = next((i for i, (a, b) in enumerate(zip(ours + [None] * 40, ref + [None] * 40)) if a != b), None)
    assert ours == ref, f"{name}: first difference at new token {first}: ours {ours}, transformers {ref}"


@pytest.mark.parametrize("name", ["qwen3_qknorm", "gemma_tied"])
def test_greedy_generation_stops_at_eos_from_generation_config(name, model_dir, tmp_path):
    """eos ids come from generation_config.json; both stop after the first one emitted."""
    prompt = torch.tensor([[1, 17, 923, 45, 310, 7, 88, 501]])
    with torch.no_grad():
        free = tm.load_reference(model_dir(name)).generate(prompt, do_sample=False, max_new_tokens=32)[0, 8:].tolist()
    # Two eos ids: a token the free run emits at step 5 (unless emitted earlier), and one it never emits.
    eos = [free[5], next(i for i in range(4, tm.VOCAB) if i not in free)]
    d = tmp_path / "eos"
    shutil.copytree(model_dir(name), d)
    gen = json.loads((d / "generation_config.json").read_text())
    gen["eos_token_id"] = eos
    (d / "generation_config.json").write_text(json.dumps(gen))
    with torch.no_grad():
        ref = tm.load_reference(d).generate(prompt, do_sample=False, max_new_tokens=32)[0, 8:].tolist()
    assert ref == free[: free.index(eos[0]) + 1]
    ours = run_op("generate", {"prompt": prompt[0].numpy()}, {"model_dir": str(d), "max_new_tokens": 32}).outputs[0]
    assert ours.tolist() == ref


# ---- save_pretrained -------------------------------------------------------------------------------------

UNKNOWN_KEYS = {"my_unknown_key": {"nested": [1, 2.5, "x"], "flag": True}, "zz_custom": "kept"}


def _with_unknown_keys(src, dst):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(UNKNOWN_KEYS)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return cfg


def _hf_load_clean(d):
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        str(d), attn_implementation="eager", dtype=torch.float32, output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v}
    assert not problems, f"transformers loading {d}: {problems}"
    return model.eval()


def _tensor_names(d):
    files = sorted(d.glob("*.safetensors"))
    out = {}
    for f in files:
        out.update(safetensors.torch.load_file(str(f)))
    return out


@pytest.mark.parametrize("name", VARIANTS)
def test_saved_directory_loads_in_transformers_with_identical_logits(name, model_dir, tmp_path):
    src = tmp_path / "src"
    original_cfg = _with_unknown_keys(model_dir(name), src)
    out = tmp_path / "saved"
    run_op("save_reload", {}, {"model_dir": str(src), "out_dir": str(out)})
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    assert (out / "generation_config.json").exists()
    assert not (out / "model.safetensors.index.json").exists()

    # Same tensors, names, dtypes and values as transformers' own file; no lm_head entry when tied.
    ref_sd, our_sd = _tensor_names(src), _tensor_names(out)
    assert sorted(our_sd) == sorted(ref_sd)
    if original_cfg["tie_word_embeddings"]:
        assert "lm_head.weight" not in our_sd
    for k, v in ref_sd.items():
        assert our_sd[k].dtype == v.dtype and torch.equal(our_sd[k], v), k

    # config.json: every key of the original kept with its value (unknown ones included).
    saved_cfg = json.loads((out / "config.json").read_text())
    changed = {
        k: (v, saved_cfg.get(k, "<missing>")) for k, v in original_cfg.items() if saved_cfg.get(k, "<missing>") != v
    }
    changed.pop("transformers_version", None)
    assert not changed, f"config.json keys changed (original, ours): {changed}"

    ids, mask, _ = _batch()
    ref = _hf_load_clean(src)
    reloaded = _hf_load_clean(out)
    with torch.no_grad():
        a = ref(input_ids=ids, attention_mask=mask).logits
        b = reloaded(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(a, b)
    ours_src, _, _ = _ours(src, tmp_path, ids, mask)
    ours_out, _, _ = _ours(out, tmp_path, ids, mask)
    np.testing.assert_array_equal(ours_out, ours_src)


@pytest.mark.parametrize("name", ["llama_gqa_bias_llama3", "gemma2_softcap_sliding"])
def test_sharded_save_round_trip(name, model_dir, tmp_path):
    src = model_dir(name)
    out = tmp_path / "sharded"
    run_op("save_reload", {}, {"model_dir": str(src), "out_dir": str(out), "max_shard_bytes": 100_000})
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) >= 2 and "model.safetensors" not in shards
    assert sorted(set(index["weight_map"].values())) == shards
    ref_sd = _tensor_names(src)
    assert sorted(index["weight_map"]) == sorted(ref_sd)
    our_sd = _tensor_names(out)
    for k, v in ref_sd.items():
        assert torch.equal(our_sd[k], v), k

    ids, mask, _ = _batch()
    with torch.no_grad():
        a = _hf_load_clean(src)(input_ids=ids, attention_mask=mask).logits
        b = _hf_load_clean(out)(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(a, b)
    ours_src, _, _ = _ours(src, tmp_path, ids, mask)
    ours_out, _, _ = _ours(out, tmp_path, ids, mask)
    np.testing.assert_array_equal(ours_out, ours_src)
    # And a sharded directory transformers writes loads in ours.
    hf_sharded = tmp_path / "hf_sharded"
    tm.load_reference(src).save_pretrained(str(hf_sharded), max_shard_size="100KB")
    assert (hf_sharded / "model.safetensors.index.json").exists()
    ours_hf, _, _ = _ours(hf_sharded, tmp_path, ids, mask)
    np.testing.assert_array_equal(ours_hf, ours_src)


def test_bf16_checkpoint_loads_and_saves_as_bf16(model_dir, tmp_path):
    """A checkpoint transformers saved in bf16: ours loaded in fp32 matches transformers loaded in fp32; loaded in
    bf16 and saved, the tensors are bf16 and bit-identical to transformers' file."""
    src = tmp_path / "bf16"
    tm.load_reference(model_dir("qwen2_tied"), torch.bfloat16).save_pretrained(str(src))
    assert json.loads((src / "config.json").read_text())["dtype"] == "bfloat16"
    ids, mask, _ = _batch()
    with torch.no_grad():
        ref = tm.load_reference(src, torch.float32)(input_ids=ids, attention_mask=mask).logits
    ours, _, _ = _ours(src, tmp_path, ids, mask)
    assert rel_err(_masked(ours, mask), _masked(ref, mask)) <= LOGITS_F32
    out = tmp_path / "saved"
    run_op("save_reload", {}, {"model_dir": str(src), "out_dir": str(out), "dtype": "bf16"})
    ref_sd, our_sd = _tensor_names(src), _tensor_names(out)
    assert sorted(our_sd) == sorted(ref_sd)
    for k, v in ref_sd.items():
        assert our_sd[k].dtype == torch.bfloat16 and torch.equal(our_sd[k], v), k
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


# ---- config.json variants ---------------------------------------------------------------------------------


def test_legacy_rope_scaling_config_gives_same_logits(model_dir, tmp_path):
    """transformers 4.x files: top-level rope_theta + rope_scaling (with "type"), torch_dtype."""
    src = model_dir("llama_gqa_bias_llama3")
    legacy = tmp_path / "legacy"
    shutil.copytree(src, legacy)
    cfg = json.loads((legacy / "config.json").read_text())
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = {"type": rope.pop("rope_type"), **rope}
    cfg["torch_dtype"] = cfg.pop("dtype")
    (legacy / "config.json").write_text(json.dumps(cfg))
    ids, mask, _ = _batch()
    ours_new, _, _ = _ours(src, tmp_path, ids, mask)
    ours_legacy, _, _ = _ours(legacy, tmp_path, ids, mask)
    np.testing.assert_array_equal(ours_legacy, ours_new)
    with torch.no_grad():
        ref = tm.load_reference(legacy)(input_ids=ids, attention_mask=mask).logits
    assert rel_err(_masked(ours_legacy, mask), _masked(ref, mask)) <= LOGITS_F32


def test_legacy_gemma3_config_gives_same_logits(model_dir, tmp_path):
    """Gemma 3 files from transformers 4.5x: rope_theta, rope_local_base_freq and rope_scaling instead of the
    per-layer-type rope_parameters, sliding_window_pattern instead of layer_types. Without rope_theta and
    rope_local_base_freq, the global layers' base is 1e6 and the local ones' 1e4 (transformers' defaults)."""
    src = model_dir("gemma3_text_local_global")
    cfg = json.loads((src / "config.json").read_text())
    rope = cfg.pop("rope_parameters")
    del cfg["layer_types"]
    cfg["sliding_window_pattern"] = 2  # layers 0 and 2 slide, layer 1 is global, as in layer_types
    full = dict(rope["full_attention"])
    legacy = {**cfg, "rope_theta": full.pop("rope_theta"),
              "rope_local_base_freq": rope["sliding_attention"]["rope_theta"], "rope_scaling": full}
    defaults = {**cfg, "rope_scaling": full}
    ids, mask, _ = _batch()
    ours_new, _, _ = _ours(src, tmp_path, ids, mask)
    for name, config in [("legacy", legacy), ("defaults", defaults)]:
        d = tmp_path / name
        shutil.copytree(src, d)
        (d / "config.json").write_text(json.dumps(config))
        ours, _, _ = _ours(d, tmp_path, ids, mask)
        if name == "legacy":
            np.testing.assert_array_equal(ours, ours_new)
        with torch.no_grad():
            ref = tm.load_reference(d)(input_ids=ids, attention_mask=mask).logits
        assert rel_err(_masked(ours, mask), _masked(ref, mask)) <= LOGITS_F32, name


def test_hub_id_resolves_in_local_cache(model_dir, tmp_path, monkeypatch):
    src = model_dir("qwen2_tied")
    hub = tmp_path / "hf_home" / "hub" / "models--tiny-org--tiny-qwen2"
    rev = "0123456789abcdef0123456789abcdef01234567"
    (hub / "refs").mkdir(parents=True)
    (hub / "refs" / "main").write_text(rev)
    shutil.copytree(src, hub / "snapshots" / rev)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    ids, mask, _ = _batch()
    by_dir, _, _ = _ours(src, tmp_path, ids, mask)
    by_id, _, _ = _ours("tiny-org/tiny-qwen2", tmp_path, ids, mask)
    np.testing.assert_array_equal(by_id, by_dir)
    with pytest.raises(OpError, match=re.escape(str(tmp_path / "hf_home" / "hub"))):
        _ours("tiny-org/absent-model", tmp_path, ids, mask)


# ---- errors ------------------------------------------------------------------------------------------------


def _copy(model_dir, tmp_path, name="llama_gqa_bias_llama3"):
    d = tmp_path / "bad"
    shutil.copytree(model_dir(name), d)
    return d


def _run_ids(d):
    ids, _, _ = _batch()
    return run_op("causal_lm", {"input_ids": ids[:1, :4].numpy()}, {"model_dir": str(d)})


def test_unknown_model_type_lists_supported(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "bert_xyz"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(OpError) as e:
        _run_ids(d)
    msg = str(e.value)
    assert "bert_xyz" in msg
    for t in SUPPORTED:
        assert re.search(rf"\b{t}\b", msg), f"supported type {t} not listed in: {msg}"


def test_missing_weight_is_named(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path)
    sd = safetensors.torch.load_file(str(d / "model.safetensors"))
    del sd["model.layers.1.mlp.down_proj.weight"]
    safetensors.torch.save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(OpError, match=re.escape("model.layers.1.mlp.down_proj.weight")):
        _run_ids(d)


def _shape_re(shape):
    return r"\D" + r"\D{1,3}".join(str(s) for s in shape) + r"\D"


def test_wrong_shape_names_tensor_and_both_shapes(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path)
    sd = safetensors.torch.load_file(str(d / "model.safetensors"))
    name = "model.layers.0.self_attn.k_proj.weight"
    expected = tuple(sd[name].shape)  # (32, 64)
    sd[name] = torch.randn(48, 64)
    safetensors.torch.save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(OpError) as e:
        _run_ids(d)
    msg = str(e.value)
    assert name in msg
    assert re.search(_shape_re(expected), msg), f"expected shape {expected} not in: {msg}"
    assert re.search(_shape_re((48, 64)), msg), f"file shape (48, 64) not in: {msg}"


def test_truncated_and_corrupt_weights_are_errors_naming_the_file(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path)
    f = d / "model.safetensors"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(OpError, match=r"invalid safetensors file .*model\.safetensors.*end past the data buffer"):
        _run_ids(d)
    f.write_bytes(raw[:8] + b"{not json" + raw[17:])
    with pytest.raises(OpError, match=r"invalid safetensors file .*model\.safetensors.*not valid JSON"):
        _run_ids(d)


def test_missing_directory_and_missing_config_are_errors(tmp_path):
    with pytest.raises(OpError, match="does-not-exist"):
        _run_ids(tmp_path / "does-not-exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OpError, match="config.json"):
        _run_ids(tmp_path / "empty")
