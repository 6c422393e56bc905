"""Mixture-of-experts families against transformers: tiny random qwen3_moe and mixtral models (8 experts, top-2,
2-3 layers; one with k = number of experts), created and saved by transformers itself in the test. Ours must give
transformers' logits, loss including the router's load-balancing loss (output_router_logits), and every gradient
(router and experts) on a padded batch; bf16 logits; greedy generation; save_pretrained writes what transformers
writes (per-expert tensors) and loads there with no missing or unexpected key and identical logits; the grouped
layout (transformers' in-memory names) loads too.

Tolerances as in test_models.py: fp32 logits 1e-5, loss 1e-6, gradients 1e-4 (relative to the reference's largest
magnitude), bf16 logits 3e-2."""
import json

import numpy as np
import pytest
import safetensors.torch
import torch
import transformers

import tiny_models as tm
from conftest import rel_err, run_op
from test_models import KERNELS, T, _batch, _hf_load_clean, _masked, _tensor_names

LOGITS_F32, LOSS_F32, GRAD_F32, LOGITS_BF16 = 1e-5, 1e-6, 1e-4, 3e-2

COMMON = dict(
    vocab_size=tm.VOCAB, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    max_position_embeddings=128, initializer_range=0.1, pad_token_id=tm.PAD, bos_token_id=1, eos_token_id=2,
    rms_norm_eps=1e-5, tie_word_embeddings=False, output_router_logits=True, router_aux_loss_coef=0.05,
)

# name -> (model_type, config kwargs).
VARIANTS = {
    # A dense layer (mlp_only_layers) between two sparse ones; top-k probabilities renormalised.
    "qwen3_moe_mlp_only": (
        "qwen3_moe",
        dict(num_hidden_layers=3, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
             intermediate_size=96, mlp_only_layers=[1], norm_topk_prob=True),
    ),
    # decoder_sparse_step 2 (layer 1 sparse, layer 0 dense), top-k probabilities as they are.
    "qwen3_moe_step2": (
        "qwen3_moe",
        dict(num_hidden_layers=2, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=24,
             intermediate_size=80, decoder_sparse_step=2, norm_topk_prob=False),
    ),
    # k = number of experts: every token goes to every expert.
    "qwen3_moe_k_all": (
        "qwen3_moe",
        dict(num_hidden_layers=2, num_experts=4, num_experts_per_tok=4, moe_intermediate_size=16,
             intermediate_size=64, norm_topk_prob=True),
    ),
    # Every layer sparse, a sliding window (8) below the sequence length.
    "mixtral_sliding": (
        "mixtral",
        dict(num_hidden_layers=2, num_local_experts=8, num_experts_per_tok=2, intermediate_size=48, sliding_window=8,
             rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
    ),
    # GPT-OSS: attention sinks, q/k/v/o biases, sliding (window 6, below the sequence length) / full / sliding
    # layers, a router with a bias, experts with biases and a clamped SwiGLU whose limit (0.6) clamps a good share of
    # the gate and up values, YaRN (factor 4 over an original length of 32, unrounded ramp ends).
    "gpt_oss_sliding_yarn": (
        "gpt_oss",
        dict(num_hidden_layers=3, num_local_experts=8, num_experts_per_tok=2, intermediate_size=32, sliding_window=6,
             swiglu_limit=0.6, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
             rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, beta_fast=16.0, beta_slow=1.0,
                                  original_max_position_embeddings=32, truncate=False)),
    ),
}


def tm_family(name):
    return VARIANTS[name][0]


def _build(name, out_dir):
    model_type, kwargs = VARIANTS[name]
    config = transformers.CONFIG_MAPPING[model_type](**{**COMMON, **kwargs})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for pname, p in model.named_parameters():
            if "norm" in pname and p.dim() == 1:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif pname.endswith(("gate.weight", "router.weight")):  # routers decisive enough that no top-k choice
                p.copy_(torch.randn(p.shape, generator=g))  # is a near tie
            elif pname.endswith(("bias", ".sinks")):  # GPT-OSS initializes some to zero: make each one show
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    model.save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_moe")
    built = {}

    def get(name):
        if name not in built:
            built[name] = _build(name, root / name)
        return built[name]

    return get


def _ours(model_dir, tmp_path, ids, mask, labels, dtype="f32", kernels="fused", checkpoint_layers=False):
    names_out = tmp_path / "param_names.json"
    params = {"model_dir": str(model_dir), "dtype": dtype, "names_out": str(names_out), **KERNELS[kernels]}
    if checkpoint_layers:
        params["checkpoint_layers"] = True
    r = run_op("moe_causal_lm", {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "labels": labels.numpy()},
               params)
    names = json.loads(names_out.read_text())
    return r.outputs[0], float(r.outputs[1]), float(r.outputs[2]), dict(zip(names, r.outputs[3:]))


def _reference(model_dir, ids, mask, labels, dtype=torch.float32):
    model = tm.load_reference(model_dir, dtype)
    out = model(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=True)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    coef = model.config.router_aux_loss_coef
    return out.logits.detach().float(), out.loss.item(), coef * out.aux_loss.item(), grads


@pytest.mark.parametrize("kernels", list(KERNELS))
@pytest.mark.parametrize("name", VARIANTS)
def test_fp32_logits_loss_with_aux_loss_and_gradients_match_transformers(name, kernels, moe_dir, tmp_path):
    d = moe_dir(name)
    ids, mask, labels = _batch()
    ref_logits, ref_loss, ref_aux, ref_grads = _reference(d, ids, mask, labels)
    logits, loss, aux, grads = _ours(d, tmp_path, ids, mask, labels, kernels=kernels)
    assert ref_aux > 1e-3 * ref_loss, "the aux loss must be large enough to show in the loss"
    e_logits = rel_err(_masked(logits, mask), _masked(ref_logits, mask))
    assert e_logits <= LOGITS_F32, f"{name}: logits relative error {e_logits:.3e}"
    assert abs(aux - ref_aux) <= LOSS_F32 * abs(ref_loss), f"{name}: aux loss {aux!r} vs {ref_aux!r}"
    assert abs(loss - ref_loss) <= LOSS_F32 * abs(ref_loss), f"{name}: loss {loss!r} vs {ref_loss!r}"
    assert set(grads) == set(ref_grads), (
        f"parameter names differ: ours only {sorted(set(grads) - set(ref_grads))}, "
        f"transformers only {sorted(set(ref_grads) - set(grads))}"
    )
    assert any(n.endswith((".mlp.gate.weight", ".mlp.router.weight")) for n in grads)
    assert any("experts.gate_up_proj" in n for n in grads)
    bad = {n: f"{e:.2e}" for n in ref_grads if (e := rel_err(grads[n], ref_grads[n])) > GRAD_F32}
    assert not bad, f"{name}: gradients over {GRAD_F32:.0e}: {bad}"


def test_checkpointed_layers_give_the_same_loss_and_gradients(moe_dir, tmp_path):
    d = moe_dir("qwen3_moe_mlp_only")
    ids, mask, labels = _batch()
    logits, loss, aux, grads = _ours(d, tmp_path, ids, mask, labels)
    c_logits, c_loss, c_aux, c_grads = _ours(d, tmp_path, ids, mask, labels, checkpoint_layers=True)
    np.testing.assert_array_equal(c_logits, logits)
    assert (c_loss, c_aux) == (loss, aux)
    for n, g in grads.items():
        assert rel_err(c_grads[n], g) <= 1e-6, n


def test_without_output_router_logits_there_is_no_aux_loss(moe_dir, tmp_path):
    d = tmp_path / "no_router_logits"
    d.mkdir()
    src = moe_dir("mixtral_sliding")
    for f in src.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((d / "config.json").read_text())
    cfg["output_router_logits"] = False
    (d / "config.json").write_text(json.dumps(cfg))
    ids, mask, labels = _batch()
    model = tm.load_reference(d)
    with torch.no_grad():
        ref_loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
    _, loss, aux, _ = _ours(d, tmp_path, ids, mask, labels)
    assert aux == 0.0
    assert abs(loss - ref_loss) <= LOSS_F32 * abs(ref_loss)


@pytest.mark.parametrize("kernels", list(KERNELS))
@pytest.mark.parametrize("name", ["qwen3_moe_mlp_only", "mixtral_sliding", "gpt_oss_sliding_yarn"])
def test_bf16_logits_match_transformers_bf16(name, kernels, moe_dir, tmp_path):
    """The eager kernels round where transformers rounds, so every position holds. The fused ones round less often
    (SwiGLU, residual + norm in fp32), and a token whose router sees a near tie between its k-th and (k+1)-th expert
    may then pick the other one, in ours or in transformers: a few positions (and those attending them) differ by
    more, the rest hold."""
    d = moe_dir(name)
    ids, mask, labels = _batch()
    model = tm.load_reference(d, torch.bfloat16)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits.float()
    logits, _, _, _ = _ours(d, tmp_path, ids, mask, labels, dtype="bf16", kernels=kernels)
    ours, ref = _masked(logits, mask), _masked(ref, mask).numpy()
    per_position = np.abs(ours - ref).max(-1) / np.abs(ref).max()
    if kernels == "eager":
        assert per_position.max() <= LOGITS_BF16, f"{name}: bf16 logits relative error {per_position.max():.3e}"
    else:
        off = np.mean(per_position > LOGITS_BF16)
        assert off <= 0.15, f"{name}: {off:.0%} of the positions over {LOGITS_BF16} ({np.sort(per_position)[-8:]})"
        assert np.median(per_position) <= LOGITS_BF16 / 2


@pytest.mark.parametrize("name", VARIANTS)
def test_greedy_generation_is_token_identical(name, moe_dir):
    d = moe_dir(name)
    prompt = torch.tensor([[1, 17, 923, 45, 310, 7, 88, 501]])
    with torch.no_grad():
        ref = tm.load_reference(d).generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                            max_new_tokens=32)
    ref = ref[0, prompt.shape[1]:].tolist()
    ours = run_op("generate", {"prompt": prompt[0].numpy()}, {"model_dir": str(d), "max_new_tokens": 32})
    assert ours.outputs[0].tolist() == ref


@pytest.mark.parametrize("name", VARIANTS)
def test_saved_directory_is_what_transformers_writes_and_loads_with_identical_logits(name, moe_dir, tmp_path):
    src = moe_dir(name)
    out = tmp_path / "saved"
    run_op("save_reload", {}, {"model_dir": str(src), "out_dir": str(out)})
    ref_sd, our_sd = _tensor_names(src), _tensor_names(out)
    assert sorted(our_sd) == sorted(ref_sd)
    if tm_family(name) == "gpt_oss":
        assert any(k.endswith("experts.gate_up_proj_bias") for k in our_sd), "GPT-OSS saves its experts grouped"
    else:
        assert any(".experts.0." in k for k in our_sd), "per-expert tensors, as transformers 5.24 saves them"
    for k, v in ref_sd.items():
        assert our_sd[k].dtype == v.dtype and torch.equal(our_sd[k], v), k
    ids, mask, _ = _batch()
    with torch.no_grad():
        a = _hf_load_clean(src)(input_ids=ids, attention_mask=mask).logits
        b = _hf_load_clean(out)(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(a, b)


def _mxfp4_checkpoint(src, dst):
    """src with its experts' weights replaced by random MXFP4 blocks and scales, stored as the GPT-OSS releases store
    them (uint8 `<name>_blocks` [E, out, in / 32, 16] and `<name>_scales` [E, out, in / 32], quantization_config
    quant_method mxfp4); scales 2^-7 .. 2^-3 keep the weights at the scale of the others."""
    dst.mkdir()
    g = torch.Generator().manual_seed(5)
    tensors = {}
    for k, v in safetensors.torch.load_file(str(src / "model.safetensors")).items():
        if k.endswith(("experts.gate_up_proj", "experts.down_proj")):
            experts, rows, cols = v.shape
            tensors[k + "_blocks"] = torch.randint(0, 256, (experts, cols, rows // 32, 16), generator=g,
                                                   dtype=torch.uint8)
            tensors[k + "_scales"] = torch.randint(120, 125, (experts, cols, rows // 32), generator=g,
                                                   dtype=torch.uint8)
        else:
            tensors[k] = v
    safetensors.torch.save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    (dst / "config.json").write_text(json.dumps(cfg))
    (dst / "generation_config.json").write_bytes((src / "generation_config.json").read_bytes())
    return dst


def test_mxfp4_checkpoint_loads_as_transformers_dequantizes_it(moe_dir, tmp_path):
    """transformers' Mxfp4Config(dequantize=True) (its _convert_moe_packed_tensors, which runs on the CPU) is the
    reference: the same logits and loss, and save_pretrained writes what transformers writes after dequantizing (the
    dequantized tensors, no quantization_config)."""
    src = _mxfp4_checkpoint(moe_dir("gpt_oss_sliding_yarn"), tmp_path / "mxfp4")
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(src), quantization_config=transformers.Mxfp4Config(dequantize=True), dtype=torch.float32,
        attn_implementation="eager")
    ref.eval()
    ids, mask, labels = _batch()
    with torch.no_grad():
        ref_out = ref(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=True)
    logits, loss, _, _ = _ours(src, tmp_path, ids, mask, labels)
    assert rel_err(_masked(logits, mask), _masked(ref_out.logits, mask)) <= LOGITS_F32
    assert abs(loss - ref_out.loss.item()) <= LOSS_F32 * abs(ref_out.loss.item())

    ours_dir, theirs_dir = tmp_path / "ours", tmp_path / "theirs"
    run_op("save_reload", {}, {"model_dir": str(src), "out_dir": str(ours_dir)})
    ref.save_pretrained(str(theirs_dir))
    ours_sd, theirs_sd = _tensor_names(ours_dir), _tensor_names(theirs_dir)
    assert sorted(ours_sd) == sorted(theirs_sd)
    for k, v in theirs_sd.items():
        assert torch.equal(ours_sd[k], v), k
    assert "quantization_config" not in json.loads((ours_dir / "config.json").read_text())
    assert "quantization_config" not in json.loads((theirs_dir / "config.json").read_text())


@pytest.mark.parametrize("name", ["qwen3_moe_mlp_only", "mixtral_sliding"])
def test_grouped_expert_layout_loads_with_the_same_logits(name, moe_dir, tmp_path):
    """A checkpoint holding transformers 5's in-memory names (mlp.experts.gate_up_proj / down_proj, mlp.gate)."""
    src = moe_dir(name)
    grouped = tmp_path / "grouped"
    grouped.mkdir()
    for f in ("config.json", "generation_config.json"):
        (grouped / f).write_bytes((src / f).read_bytes())
    model = tm.load_reference(src)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    assert any(k.endswith("mlp.experts.gate_up_proj") for k in state)
    safetensors.torch.save_file(state, str(grouped / "model.safetensors"), metadata={"format": "pt"})
    ids, mask, labels = _batch()
    a = _ours(src, tmp_path, ids, mask, labels)
    b = _ours(grouped, tmp_path, ids, mask, labels)
    np.testing.assert_array_equal(a[0], b[0])


# ---- LoRA (peft) -------------------------------------------------------------------------------------------------


def _without_router_loss(src, dst):
    """A copy with output_router_logits off: peft_model (test_peft.py) compares the cross-entropy alone."""
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((dst / "config.json").read_text())
    cfg["output_router_logits"] = False
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(
    "name,targets",
    [
        # (peft 0.21 turns a target down_proj / gate_proj + up_proj into target_parameters on the grouped experts.)
        ("qwen3_moe_mlp_only", ["q_proj", "k_proj", "v_proj", "o_proj"]),
        # The router too: peft 0.21 wraps transformers 5's router weight (a parameter of a custom module), which
        # computes what LoRA on a linear router computes, under the same adapter names.
        ("mixtral_sliding", ["q_proj", "v_proj", "o_proj", "gate"]),
        ("gpt_oss_sliding_yarn", ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ],
)
def test_lora_on_attention_matches_peft(name, targets, moe_dir, tmp_path, monkeypatch):
    """test_peft.py's check on these families: a peft adapter's logits, loss, gradients and AdamW steps; our saved
    adapter in peft; our merged model against merge_and_unload. The adapters after the AdamW steps are held to 5e-3:
    some gradient entries are zero up to fp32 noise (1e-10: the router rows of an expert no token chose, whose
    logits do not reach Mixtral's renormalised weights; attention entries of ~1e-7), and Adam's first step
    g / (|g| + eps) turns that noise into a few percent of the learning rate, differently in each implementation."""
    import test_peft

    d = _without_router_loss(moe_dir(name), tmp_path / "base")
    monkeypatch.setitem(test_peft.CASES, name, targets)
    monkeypatch.setattr(test_peft, "TRAINED", 5e-3)
    test_peft.test_peft_adapter_logits_gradients_training_save_and_merge(name, {}, lambda _: d, tmp_path)


def _expert_adapter(base_dir, out_dir, **lora):
    """A peft adapter on the experts (peft 0.21: target_parameters on the grouped tensors) with non-zero A and B."""
    import peft

    model = tm.load_reference(base_dir)
    torch.manual_seed(3)
    pm = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM", **lora))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(0.2 * torch.randn(p.shape))
    pm.save_pretrained(str(out_dir))
    return out_dir


@pytest.mark.parametrize(
    "name,lora",
    [
        # Both grouped tensors (nested wrappers: gate_up_proj's under base_layer) and the attention.
        ("qwen3_moe_mlp_only",
         dict(target_modules=["q_proj", "o_proj"], target_parameters=["gate_up_proj", "down_proj"])),
        # Mixtral's v4 names, which peft turns into target_parameters, gate_up_proj with rank and alpha doubled.
        ("mixtral_sliding", dict(target_modules=["w1", "w3"])),
        ("mixtral_sliding", dict(target_modules=["w2", "v_proj"])),
        # GPT-OSS's transposed grouped tensors ([E, in, out]), with the attention.
        ("gpt_oss_sliding_yarn",
         dict(target_modules=["q_proj", "v_proj"], target_parameters=["gate_up_proj", "down_proj"])),
        ("gpt_oss_sliding_yarn", dict(target_modules=["o_proj"], target_parameters=["down_proj"])),
    ],
    ids=["qwen3_both", "mixtral_w1_w3", "mixtral_w2", "gpt_oss_both", "gpt_oss_down"],
)
def test_lora_on_the_experts_matches_peft(name, lora, moe_dir, tmp_path):
    """A peft adapter on the grouped experts: logits, loss, gradients and 3 AdamW steps as peft + torch's AdamW; our
    saved adapter loads in peft with our logits; our merged model against merge_and_unload (as test_peft.py's check
    of linear layers, AdamW held to 5e-3 for the reason test_lora_on_attention_matches_peft gives)."""
    import peft

    import test_peft as tp

    d = _without_router_loss(moe_dir(name), tmp_path / "base")
    adapter = _expert_adapter(d, tmp_path / "peft_adapter", **lora)
    assert json.loads((adapter / "adapter_config.json").read_text())["target_parameters"]
    ids, mask, labels = tp._batch()
    ref_logits, ref_loss, ref_grads, ref_final, ref_model = tp._reference(d, adapter, ids, mask, labels, tp.STEPS)
    saved, merged = tmp_path / "ours_adapter", tmp_path / "ours_merged"
    params = {"model_dir": str(d), "adapter_dir": str(adapter), "steps": tp.STEPS, "lr": tp.LR,
              "weight_decay": tp.WD, "save_dir": str(saved), "merged_dir": str(merged)}
    logits, loss, count, grads, final = tp._ours(tmp_path, params, ids, mask, labels)
    assert rel_err(_masked(logits, mask), _masked(ref_logits, mask)) <= LOGITS_F32
    assert abs(loss - ref_loss) <= LOSS_F32 * abs(ref_loss)
    assert set(grads) == set(ref_grads) and any(".experts." in n for n in grads)
    assert count == ref_model.get_nb_trainable_parameters()[0]
    for n in ref_grads:
        assert rel_err(grads[n], ref_grads[n]) <= GRAD_F32, n
        assert rel_err(final[n], ref_final[n]) <= 5e-3, n

    cfg = json.loads((saved / "adapter_config.json").read_text())
    theirs = json.loads((adapter / "adapter_config.json").read_text())
    assert sorted(cfg["target_parameters"]) == sorted(theirs["target_parameters"])
    reloaded = peft.PeftModel.from_pretrained(tm.load_reference(d), str(saved))
    reloaded.eval()
    ours_after, *_ = tp._ours(tmp_path, {"model_dir": str(d), "adapter_dir": str(saved)}, ids, mask, labels)
    with torch.no_grad():
        peft_after = reloaded(input_ids=ids, attention_mask=mask).logits
        ref_merged = reloaded.merge_and_unload()(input_ids=ids, attention_mask=mask).logits
        ours_merged = tm.load_reference(merged)(input_ids=ids, attention_mask=mask).logits
    assert rel_err(_masked(ours_after, mask), _masked(peft_after, mask)) <= LOGITS_F32
    assert rel_err(_masked(ours_merged, mask), _masked(ref_merged, mask)) <= LOGITS_F32


def test_expert_lora_we_train_loads_in_peft(moe_dir, tmp_path):
    """peft.target_parameters in our config: adapters on both grouped tensors (and q_proj) trained 2 AdamW steps and
    saved; peft loads them (same trainable count as peft's own for that config) and computes our logits."""
    import peft

    import test_peft as tp

    d = _without_router_loss(moe_dir("qwen3_moe_mlp_only"), tmp_path / "base")
    ids, mask, labels = tp._batch()
    saved = tmp_path / "ours"
    config = {"target_modules": ["*.q_proj"], "target_parameters": ["gate_up_proj", "down_proj"], "dim": 4,
              "alpha": 8, "lora_A_init": "kaiming"}
    tp._ours(tmp_path, {"model_dir": str(d), "peft": config, "steps": 2, "lr": 1e-2, "save_dir": str(saved)}, ids,
             mask, labels)
    ours, _, count, _, _ = tp._ours(tmp_path, {"model_dir": str(d), "adapter_dir": str(saved)}, ids, mask, labels)
    reloaded = peft.PeftModel.from_pretrained(tm.load_reference(d), str(saved))
    reloaded.eval()
    with torch.no_grad():
        theirs = reloaded(input_ids=ids, attention_mask=mask).logits
    assert rel_err(_masked(ours, mask), _masked(theirs, mask)) <= LOGITS_F32
    fresh = peft.get_peft_model(tm.load_reference(d), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj"], target_parameters=["gate_up_proj", "down_proj"]))
    assert count == fresh.get_nb_trainable_parameters()[0]
    base = tm.load_reference(d)
    with torch.no_grad():
        assert rel_err(_masked(ours, mask), _masked(base(input_ids=ids, attention_mask=mask).logits, mask)) > 1e-3
