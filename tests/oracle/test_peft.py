"""LoRA against Hugging Face peft: the fused lora_linear op against torch, and tiny causal LMs of several families
(tiny_models.py) with adapters. An adapter saved by peft (random non-zero B) loaded by us gives peft's logits, loss
and adapter gradients, and after N AdamW steps on the same batch the same adapters as peft + torch.optim.AdamW; an
adapter we save loads with PeftModel.from_pretrained and reproduces our logits; our merged model matches
merge_and_unload(); the trainable-parameter count equals peft's for the same selection.

Tolerances: logits 1e-5, loss 1e-6, gradients 1e-4, adapters after training 1e-4 (relative, conftest.rel_err)."""
import json

import numpy as np
import peft
import pytest
import safetensors.torch
import torch

import tiny_models as tm
from conftest import BF16, BWD_F32, FWD_F32, OpError, assert_close, rel_err, run_op

LOGITS, LOSS, GRAD, TRAINED = 1e-5, 1e-6, 1e-4, 1e-4
T = 12
STEPS, LR, WD = 3, 1e-2, 0.01

# variant -> peft target_modules (leaf names, as peft users write them).
CASES = {
    "llama_gqa_bias_llama3": ["q_proj", "v_proj", "o_proj", "down_proj"],
    "qwen2_tied": ["q_proj", "k_proj", "up_proj"],
    "phi3_longrope_short_partial": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gemma_tied": ["k_proj", "gate_proj", "down_proj"],
}


# ---- the op ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,out,rank,bias", [((5, 7), 3, 2, True), ((2, 9, 33), 19, 4, False), ((4, 64), 48, 8, True)])
def test_lora_linear_matches_torch(shape, out, rank, bias):
    x = torch.randn(shape, requires_grad=True)
    w = torch.randn(out, shape[-1], requires_grad=True)
    b = torch.randn(out, requires_grad=True) if bias else None
    a = torch.randn(rank, shape[-1], requires_grad=True)
    bb = torch.randn(out, rank, requires_grad=True)
    scale = 1.5
    inputs = {"x": x, "weight": w, "lora_a": a, "lora_b": bb}
    if bias:
        inputs["bias"] = b
    g = torch.randn(*shape[:-1], out)
    r = run_op("lora_linear", inputs, {"scale": scale}, grad_outputs=[g], requires_grad=tuple(inputs))
    d = {k: v.detach().double().requires_grad_() for k, v in inputs.items()}
    ref = torch.nn.functional.linear(d["x"], d["weight"], d.get("bias")) + scale * (d["x"] @ d["lora_a"].T) @ d["lora_b"].T
    ref.backward(g.double())
    assert_close(r.outputs[0], ref, FWD_F32, "y")
    for k in inputs:
        assert_close(r.grads[k], d[k].grad, BWD_F32, f"d{k}")


def test_lora_linear_bf16_and_frozen_bf16_base():
    x, w, a, b = torch.randn(6, 40), torch.randn(24, 40), torch.randn(4, 40), torch.randn(24, 4)
    bf = lambda t: t.bfloat16()
    r = run_op("lora_linear", {"x": bf(x), "weight": bf(w), "lora_a": bf(a), "lora_b": bf(b)}, {"scale": 0.5})
    dd = lambda t: t.bfloat16().double()
    ref = dd(x) @ dd(w).T + 0.5 * (dd(x) @ dd(a).T) @ dd(b).T
    assert_close(r.outputs[0], ref, BF16, "bf16 y")
    # bf16 weight under f32 x / adapters: base on bf16-rounded x, adapters exact.
    r = run_op("lora_linear", {"x": x, "weight": bf(w), "lora_a": a, "lora_b": b}, {"scale": 0.5})
    ref = dd(x) @ dd(w).T + 0.5 * (x.double() @ a.double().T) @ b.double().T
    assert_close(r.outputs[0], ref, FWD_F32, "mixed y")


def test_lora_linear_bad_shapes_are_errors():
    with pytest.raises(OpError, match="lora_a"):
        run_op("lora_linear", {"x": torch.randn(2, 8), "weight": torch.randn(4, 8), "lora_a": torch.randn(2, 7),
                               "lora_b": torch.randn(4, 2)})


# ---- models --------------------------------------------------------------------------------------------------


def _batch():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(4, tm.VOCAB, (2, T), generator=g)
    mask = torch.ones(2, T, dtype=torch.int64)
    mask[1, 9:] = 0
    ids[mask == 0] = tm.PAD
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[0, :3] = -100
    return ids, mask, labels


def _peft_adapter(base_dir, targets, out_dir, use_rslora=False):
    """A peft adapter with non-zero A and B (r 4, alpha 8), saved by peft itself."""
    base = tm.load_reference(base_dir)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, use_rslora=use_rslora,
                          task_type="CAUSAL_LM")
    torch.manual_seed(3)
    pm = peft.get_peft_model(base, cfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(0.2 * torch.randn(p.shape))
    pm.save_pretrained(str(out_dir))
    return out_dir


def _ours(tmp_path, params, ids, mask, labels):
    names_out = tmp_path / "names.json"
    r = run_op("peft_model", {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "labels": labels.numpy()},
               dict(params, names_out=str(names_out)))
    names = json.loads(names_out.read_text())
    k = len(names)
    assert len(r.outputs) == 3 + 2 * k
    grads = dict(zip(names, r.outputs[3:3 + k]))
    final = dict(zip(names, r.outputs[3 + k:]))
    return r.outputs[0], float(r.outputs[1]), int(r.outputs[2]), grads, final


def _ours_name(peft_name):
    """base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight -> model.layers.0...lora_A.weight"""
    return peft_name.removeprefix("base_model.model.").replace(".default.", ".")


def _reference(base_dir, adapter_dir, ids, mask, labels, steps=0):
    base = tm.load_reference(base_dir)
    pm = peft.PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True)
    pm.eval()
    params = {_ours_name(n): p for n, p in pm.named_parameters() if p.requires_grad}
    out = pm(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    logits, loss = out.logits.detach(), out.loss.item()
    grads = {n: p.grad.detach().clone() for n, p in params.items()}
    if steps:
        opt = torch.optim.AdamW(list(params.values()), lr=LR, weight_decay=WD)
        for s in range(steps):
            if s:
                opt.zero_grad()
                pm(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            opt.step()
    final = {n: p.detach().clone() for n, p in params.items()}
    return logits, loss, grads, final, pm


def _masked(x, mask):
    m = mask.numpy().astype(bool)
    return x[m] if isinstance(x, np.ndarray) else x[torch.from_numpy(m)]


@pytest.mark.parametrize("kernels", [{}, {"fused": False, "flash_attention": False}], ids=["fused", "eager"])
@pytest.mark.parametrize("name", list(CASES))
def test_peft_adapter_logits_gradients_training_save_and_merge(name, kernels, model_dir, tmp_path):
    base_dir = model_dir(name)
    adapter = _peft_adapter(base_dir, CASES[name], tmp_path / "peft_adapter")
    ids, mask, labels = _batch()
    ref_logits, ref_loss, ref_grads, ref_final, ref_model = _reference(base_dir, adapter, ids, mask, labels, STEPS)
    saved, merged = tmp_path / "ours_adapter", tmp_path / "ours_merged"
    params = {"model_dir": str(base_dir), "adapter_dir": str(adapter), "steps": STEPS, "lr": LR, "weight_decay": WD,
              "save_dir": str(saved), "merged_dir": str(merged), **kernels}
    logits, loss, count, grads, final = _ours(tmp_path, params, ids, mask, labels)

    assert_close(_masked(logits, mask), _masked(ref_logits, mask), LOGITS, f"{name} logits")
    assert abs(loss - ref_loss) <= LOSS * abs(ref_loss), f"{name}: loss {loss} vs {ref_loss}"
    assert set(grads) == set(ref_grads)
    assert count == ref_model.get_nb_trainable_parameters()[0]
    for n in ref_grads:
        assert_close(grads[n], ref_grads[n], GRAD, f"{name} grad {n}")
        assert_close(final[n], ref_final[n], TRAINED, f"{name} after {STEPS} AdamW steps {n}")

    # Our saved adapter: peft's names and shapes, loads with PeftModel.from_pretrained, same logits as ours.
    cfg = json.loads((saved / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM" and cfg["r"] == 4
    tensors = safetensors.torch.load_file(str(saved / "adapter_model.safetensors"))
    assert {_ours_name(k) for k in tensors} == set(final) and all(k.startswith("base_model.model.") for k in tensors)
    ours_after, *_ = _ours(tmp_path, {"model_dir": str(base_dir), "adapter_dir": str(saved)}, ids, mask, labels)
    reloaded = peft.PeftModel.from_pretrained(tm.load_reference(base_dir), str(saved))
    reloaded.eval()
    with torch.no_grad():
        peft_after = reloaded(input_ids=ids, attention_mask=mask).logits
    assert_close(_masked(ours_after, mask), _masked(peft_after, mask), LOGITS, f"{name} our adapter in peft")

    # Our merged model (transformers loads it) against peft's merge_and_unload of the same adapter.
    with torch.no_grad():
        ref_merged = reloaded.merge_and_unload()(input_ids=ids, attention_mask=mask).logits
        ours_merged = tm.load_reference(merged)(input_ids=ids, attention_mask=mask).logits
    assert_close(_masked(ours_merged, mask), _masked(ref_merged, mask), LOGITS, f"{name} merged")


def test_rslora_adapter_scale(model_dir, tmp_path):
    base_dir = model_dir("qwen2_tied")
    adapter = _peft_adapter(base_dir, ["q_proj", "down_proj"], tmp_path / "rs", use_rslora=True)
    ids, mask, labels = _batch()
    ref_logits, *_ = _reference(base_dir, adapter, ids, mask, labels)
    logits, *_ = _ours(tmp_path, {"model_dir": str(base_dir), "adapter_dir": str(adapter)}, ids, mask, labels)
    assert_close(_masked(logits, mask), _masked(ref_logits, mask), LOGITS, "rslora logits")


@pytest.mark.parametrize(
    "name,ours,theirs",
    [
        ("llama_gqa_bias_llama3", {}, r".*_proj"),  # NeMo's default '*_proj'
        ("phi3_longrope_short_partial", {"target_modules": ["*.self_attn.*"]}, ["qkv_proj", "o_proj"]),
        ("qwen2_tied", {"exclude_modules": ["*.mlp.*"]}, ["q_proj", "k_proj", "v_proj", "o_proj"]),
        ("gemma_tied", {"match_all_linear": True}, "all-linear"),
    ],
)
def test_trainable_count_and_our_adapter_in_peft(name, ours, theirs, model_dir, tmp_path):
    """Our selection trains as many parameters as peft's for the same layers; the adapter we apply, train and save
    loads in peft with our logits."""
    base_dir = model_dir(name)
    ids, mask, labels = _batch()
    saved = tmp_path / "ours"
    params = {"model_dir": str(base_dir), "peft": dict(ours, dim=4, alpha=16), "steps": 2, "lr": LR,
              "save_dir": str(saved)}
    _, _, count, _, _ = _ours(tmp_path, params, ids, mask, labels)
    pm = peft.get_peft_model(tm.load_reference(base_dir), peft.LoraConfig(r=4, lora_alpha=16, target_modules=theirs))
    assert count == pm.get_nb_trainable_parameters()[0]
    ours_after, *_ = _ours(tmp_path, {"model_dir": str(base_dir), "adapter_dir": str(saved)}, ids, mask, labels)
    reloaded = peft.PeftModel.from_pretrained(tm.load_reference(base_dir), str(saved))
    reloaded.eval()
    with torch.no_grad():
        peft_logits = reloaded(input_ids=ids, attention_mask=mask).logits
    assert_close(_masked(ours_after, mask), _masked(peft_logits, mask), LOGITS, f"{name} our adapter in peft")


def test_layer_subset_saves_exact_targets(model_dir, tmp_path):
    """A selection peft's leaf names cannot express (one layer only) is saved as a regex naming exactly those."""
    base_dir = model_dir("llama_gqa_bias_llama3")
    ids, mask, labels = _batch()
    saved = tmp_path / "sub"
    params = {"model_dir": str(base_dir), "peft": {"target_modules": ["*.layers.1.*_proj"], "dim": 2, "alpha": 4},
              "steps": 1, "lr": LR, "save_dir": str(saved)}
    _, _, count, _, final = _ours(tmp_path, params, ids, mask, labels)
    assert all(".layers.1." in n for n in final)
    reloaded = peft.PeftModel.from_pretrained(tm.load_reference(base_dir), str(saved))
    assert sum(p.numel() for n, p in reloaded.named_parameters() if "lora_" in n) == count


def test_bad_configs_are_clear_errors(model_dir, tmp_path):
    base_dir = model_dir("qwen2_tied")
    ids, mask, labels = _batch()
    run = lambda p: _ours(tmp_path, {"model_dir": str(base_dir), "peft": p}, ids, mask, labels)
    with pytest.raises(OpError, match="mutually exclusive"):
        run({"target_modules": ["*_proj"], "exclude_modules": ["*.o_proj"]})
    with pytest.raises(OpError, match="matches no linear layer"):
        run({"target_modules": ["nothing_here"]})
    with pytest.raises(OpError, match="rank"):
        run({"dim": 0})
    with pytest.raises(OpError, match="alpha"):
        run({"alpha": -1})
