"""Image-text-to-text models against transformers: a tiny random Gemma3ForConditionalGeneration written by
transformers (SigLIP tower of 2 layers on 32x32 images with 8x8 patches, 4 image tokens per image, a gemma3_text
decoder of 3 layers mixing sliding (window 3, shorter than an image) and global attention). Several images per
batch, right and left padding, the processor's token_type_ids (each image's tokens attend to each other both
ways, within the window on sliding layers).

Tolerances as test_models.py: fp32 logits 1e-5 relative, loss 1e-6, every parameter gradient 1e-4 (vision
tower, projector and decoder); greedy generation of 32 tokens identical; a directory we save loads in
transformers with no missing keys and identical logits."""
import json
import shutil

import numpy as np
import pytest
import safetensors.torch
import torch
import transformers

from conftest import OpError, rel_err, run_op

LOGITS_F32, LOSS_F32, GRAD_F32 = 1e-5, 1e-6, 1e-4
VOCAB, PAD, BOS, EOS = 1000, 3, 1, 2
IMAGE, BOI, EOI = 990, 991, 992
TOKENS_PER_IMAGE = 4
KERNELS = {"fused": {}, "eager": {"fused": False, "flash_attention": False}}


def make_config(image_token=IMAGE, vision_overrides=None, **text_overrides):
    text = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=20, sliding_window=3, max_position_embeddings=256,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"], rms_norm_eps=1e-5,
        initializer_range=0.1, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
        rope_parameters=dict(
            full_attention=dict(rope_type="linear", rope_theta=100000.0, factor=8.0),
            sliding_attention=dict(rope_type="default", rope_theta=100.0),
        ),
    )
    text.update(text_overrides)
    vision = dict(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        layer_norm_eps=1e-5, vision_use_head=False,
    )
    vision.update(vision_overrides or {})
    return transformers.Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=TOKENS_PER_IMAGE, image_token_index=image_token,
        boi_token_index=BOI, eoi_token_index=EOI, initializer_range=0.1,
    )


def build(out_dir, seed=0, image_token=IMAGE, vision_overrides=None, **text_overrides):
    """A random Gemma 3 VLM saved by transformers: norm weights, biases and the projection randomized too, so
    that one dropped or misapplied shows."""
    torch.manual_seed(seed)
    model = transformers.Gemma3ForConditionalGeneration(
        make_config(image_token, vision_overrides, **text_overrides)
    ).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "layer_norm" in name or "layernorm" in name and "vision" in name:
                p.copy_((1.0 + 0.2 * noise) if name.endswith("weight") else 0.1 * noise)
            elif "norm" in name and p.dim() == 1:
                p.copy_(0.5 * noise)  # Gemma's (1 + w) norms
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            elif "mm_input_projection_weight" in name:
                p.copy_(0.2 * noise)
    model.save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny_gemma3_vlm") / "model")


def load_reference(model_dir):
    model = transformers.Gemma3ForConditionalGeneration.from_pretrained(
        str(model_dir), attn_implementation="eager", dtype=torch.float32
    )
    return model.eval()


def image_span(image_token=IMAGE):
    return [BOI] + [image_token] * TOKENS_PER_IMAGE + [EOI]


def batch(image_token=IMAGE):
    """3 rows of 24 tokens: two images and no padding; one image, right-padded; one image, left-padded; 4 images
    in all."""
    g = torch.Generator().manual_seed(7)

    def text(n):
        return torch.randint(4, 900, (n,), generator=g).tolist()

    T = 24
    rows = [
        [BOS] + text(3) + image_span(image_token) + text(4) + image_span(image_token) + text(4),
        [BOS] + text(2) + image_span(image_token) + text(5),
        [BOS] + text(4) + image_span(image_token) + text(6),
    ]
    ids = torch.full((3, T), PAD)
    mask = torch.zeros(3, T, dtype=torch.int64)
    ids[0], mask[0] = torch.tensor(rows[0]), 1
    ids[1, : len(rows[1])], mask[1, : len(rows[1])] = torch.tensor(rows[1]), 1
    ids[2, T - len(rows[2]) :], mask[2, T - len(rows[2]) :] = torch.tensor(rows[2]), 1
    assert all(len(r) <= T for r in rows) and len(rows[0]) == T
    types = (ids == image_token).long()
    labels = ids.clone()
    # Padding, image tokens and each row's first token (a left pad's logits would predict it) carry no label.
    labels[(mask == 0) | (types == 1) | (ids == BOS)] = -100
    pixels = torch.randn(4, 3, 32, 32, generator=g)
    return ids, mask, types, labels, pixels


# Checkpoint names (what transformers 5 saves) -> transformers 5's module names.
MODULE_NAMES = [("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."),
                ("vision_tower.", "model.vision_tower."), ("multi_modal_projector.", "model.multi_modal_projector.")]


def module_name(name):
    for saved, module in MODULE_NAMES:
        if name.startswith(saved):
            return module + name[len(saved):]
    return name


def ours(model_dir, tmp_path, ids, mask, types, pixels, labels=None, kernels="fused", **params):
    names_out = tmp_path / "names.json"
    inputs = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "pixel_values": pixels.numpy()}
    if types is not None:
        inputs["token_type_ids"] = types.numpy()
    if labels is not None:
        inputs["labels"] = labels.numpy()
    r = run_op("vlm", inputs, {"model_dir": str(model_dir), "names_out": str(names_out), **KERNELS[kernels], **params})
    if labels is None:
        return r.outputs[0], None, None
    names = json.loads(names_out.read_text())
    return r.outputs[0], float(r.outputs[1]), dict(zip(names, r.outputs[2:]))


def masked(x, mask):
    m = mask.numpy().astype(bool)
    return x[m] if isinstance(x, np.ndarray) else x[torch.from_numpy(m)]


@pytest.mark.parametrize("kernels", list(KERNELS))
def test_fp32_logits_loss_and_every_gradient_match_transformers(vlm_dir, tmp_path, kernels):
    ids, mask, types, labels, pixels = batch()
    model = load_reference(vlm_dir)
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, pixel_values=pixels, labels=labels)
    out.loss.backward()
    ref_grads = {n: p.grad for n, p in model.named_parameters()}
    logits, loss, grads = ours(vlm_dir, tmp_path, ids, mask, types, pixels, labels, kernels=kernels)

    e_logits = rel_err(masked(logits, mask), masked(out.logits.detach(), mask))
    assert e_logits <= LOGITS_F32, f"logits relative error {e_logits:.3e}"
    e_loss = abs(loss - out.loss.item()) / abs(out.loss.item())
    assert e_loss <= LOSS_F32, f"loss {loss!r} vs {out.loss.item()!r}"
    assert set(grads) == set(ref_grads), (
        f"ours only {sorted(set(grads) - set(ref_grads))}, transformers only {sorted(set(ref_grads) - set(grads))}"
    )
    assert any(n.startswith("model.vision_tower.") for n in grads)
    assert "model.multi_modal_projector.mm_input_projection_weight" in grads
    # Without RoPE a key bias adds the same q.b to every score of a query, which softmax ignores: the vision
    # tower's k_proj.bias gradients are zero up to rounding on both sides, so they are held to that instead.
    zero = [n for n in ref_grads if n.startswith("model.vision_tower.") and n.endswith("k_proj.bias")]
    largest = max(float(g.abs().max()) for g in ref_grads.values())
    for n in zero:
        assert max(np.abs(grads[n]).max(), float(ref_grads[n].abs().max())) <= 1e-6 * largest, n
    errs = {n: rel_err(grads[n], ref_grads[n].numpy()) for n in ref_grads if n not in zero}
    bad = {n: f"{e:.2e}" for n, e in errs.items() if e > GRAD_F32}
    assert not bad, f"gradients over {GRAD_F32:.0e}: {bad}"


@pytest.mark.parametrize("kernels", list(KERNELS))
def test_bf16_logits_match_transformers_bf16(vlm_dir, tmp_path, kernels):
    """As test_models.py: within 3e-2 of transformers in bf16, and no further from fp32 than transformers' bf16 run
    is (x 1.25 + 5e-3)."""
    ids, mask, types, _, pixels = batch()
    with torch.no_grad():
        ref_f32 = load_reference(vlm_dir)(input_ids=ids, attention_mask=mask, token_type_ids=types,
                                          pixel_values=pixels).logits
        model = transformers.Gemma3ForConditionalGeneration.from_pretrained(
            str(vlm_dir), attn_implementation="eager", dtype=torch.bfloat16).eval()
        ref_bf16 = model(input_ids=ids, attention_mask=mask, token_type_ids=types,
                         pixel_values=pixels.bfloat16()).logits.float()
    logits, _, _ = ours(vlm_dir, tmp_path, ids, mask, types, pixels, kernels=kernels, dtype="bf16")
    err = rel_err(masked(logits, mask), masked(ref_bf16, mask))
    ours_f32 = rel_err(masked(logits, mask), masked(ref_f32, mask))
    hf_f32 = rel_err(masked(ref_bf16.numpy(), mask), masked(ref_f32, mask))
    assert err <= 3e-2, f"bf16 logits relative error {err:.3e} against transformers bf16"
    assert ours_f32 <= 1.25 * hf_f32 + 5e-3, f"bf16 vs fp32 {ours_f32:.3e}, transformers' {hf_f32:.3e}"


def test_image_tokens_attend_both_ways_only_with_token_type_ids(vlm_dir, tmp_path):
    """Without token_type_ids transformers masks causally everywhere; with them an image's first token sees its
    later ones, so the logits differ (and each matches transformers)."""
    ids, mask, types, _, pixels = batch()
    model = load_reference(vlm_dir)
    results = {}
    for name, t in [("blocks", types), ("causal", None)]:
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=mask, token_type_ids=t, pixel_values=pixels).logits
        logits, _, _ = ours(vlm_dir, tmp_path, ids, mask, t, pixels)
        assert rel_err(masked(logits, mask), masked(ref, mask)) <= LOGITS_F32, name
        results[name] = logits
    assert not np.allclose(results["blocks"], results["causal"])


def test_image_token_outside_the_text_vocabulary_matches_transformers(tmp_path):
    """An image token id >= vocab_size embeds as token 0 before the features replace it, as in transformers."""
    d = build(tmp_path / "model", image_token=VOCAB)
    ids, mask, types, labels, pixels = batch(image_token=VOCAB)
    model = load_reference(d)
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, pixel_values=pixels, labels=labels)
    out.loss.backward()
    logits, loss, grads = ours(d, tmp_path, ids, mask, types, pixels, labels)
    assert rel_err(masked(logits, mask), masked(out.logits.detach(), mask)) <= LOGITS_F32
    assert abs(loss - out.loss.item()) <= LOSS_F32 * abs(out.loss.item())
    embed = "model.language_model.embed_tokens.weight"
    assert rel_err(grads[embed], model.get_parameter(embed).grad) <= GRAD_F32


def test_image_size_not_a_multiple_of_the_patch_drops_the_remainder(tmp_path):
    """A 36-pixel image in 8-pixel patches: the convolution's "valid" padding drops the last 4 rows and columns."""
    d = build(tmp_path / "model", vision_overrides={"image_size": 36})
    ids, mask, types, _, _ = batch()
    pixels = torch.randn(4, 3, 36, 36, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = load_reference(d)(input_ids=ids, attention_mask=mask, token_type_ids=types, pixel_values=pixels).logits
    logits, _, _ = ours(d, tmp_path, ids, mask, types, pixels)
    assert rel_err(masked(logits, mask), masked(ref, mask)) <= LOGITS_F32


def test_checkpointed_layers_give_the_same_gradients(vlm_dir, tmp_path):
    ids, mask, types, labels, pixels = batch()
    _, loss, grads = ours(vlm_dir, tmp_path, ids, mask, types, pixels, labels)
    _, loss_ckpt, grads_ckpt = ours(vlm_dir, tmp_path, ids, mask, types, pixels, labels, checkpoint_layers=True)
    assert loss == loss_ckpt
    for n in grads:
        np.testing.assert_array_equal(grads_ckpt[n], grads[n], err_msg=n)


@pytest.mark.parametrize("images", [1, 2])
def test_greedy_generation_with_images_is_token_identical(vlm_dir, images):
    prompt = [BOS, 17, 923, 45] + image_span() + [310, 7] + (image_span() + [88] if images == 2 else []) + [501]
    ids = torch.tensor([prompt])
    pixels = torch.randn(images, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    model = load_reference(vlm_dir)
    with torch.no_grad():
        ref = model.generate(
            ids, attention_mask=torch.ones_like(ids), token_type_ids=(ids == IMAGE).long(), pixel_values=pixels,
            do_sample=False, max_new_tokens=32,
        )
    ref = ref[0, ids.shape[1] :].tolist()
    r = run_op("vlm_generate", {"prompt": ids[0].numpy(), "pixel_values": pixels.numpy()},
               {"model_dir": str(vlm_dir), "max_new_tokens": 32})
    assert r.outputs[0].tolist() == ref


def test_sequence_logprobs_match_transformers(vlm_dir):
    tokens = [BOS, 17, 923] + image_span() + [310, 7] + image_span() + [88, 501, 12]
    ids = torch.tensor([tokens])
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = load_reference(vlm_dir)(input_ids=ids, token_type_ids=(ids == IMAGE).long(),
                                         pixel_values=pixels).logits[0].double()
    ref = torch.log_softmax(logits[:-1], -1).gather(1, ids[0, 1:, None])[:, 0]
    r = run_op("vlm_logprobs", {"tokens": ids[0].numpy(), "pixel_values": pixels.numpy()},
               {"model_dir": str(vlm_dir)})
    assert rel_err(r.outputs[0], ref) <= LOGITS_F32


def test_saved_directory_loads_in_transformers_with_identical_logits(vlm_dir, tmp_path):
    out = tmp_path / "saved"
    run_op("vlm_save", {}, {"model_dir": str(vlm_dir), "out_dir": str(out)})
    ref_sd = safetensors.torch.load_file(str(vlm_dir / "model.safetensors"))
    our_sd = safetensors.torch.load_file(str(out / "model.safetensors"))
    assert sorted(our_sd) == sorted(ref_sd)
    for k, v in ref_sd.items():
        assert torch.equal(our_sd[k], v), k
    original = json.loads((vlm_dir / "config.json").read_text())
    saved = json.loads((out / "config.json").read_text())
    original.pop("transformers_version", None)
    assert {k: saved.get(k) for k in original} == original

    reloaded, info = transformers.Gemma3ForConditionalGeneration.from_pretrained(
        str(out), attn_implementation="eager", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids, mask, types, _, pixels = batch()
    with torch.no_grad():
        a = load_reference(vlm_dir)(input_ids=ids, attention_mask=mask, token_type_ids=types, pixel_values=pixels)
        b = reloaded.eval()(input_ids=ids, attention_mask=mask, token_type_ids=types, pixel_values=pixels)
    assert torch.equal(a.logits, b.logits)


@pytest.mark.parametrize("layout", ["hub_transformers4", "module_names"])
def test_other_checkpoint_layouts_load(vlm_dir, tmp_path, layout):
    """Gemma 3 checkpoints on the Hub (transformers 4.5x) keep SigLIP's vision_tower.vision_model.* level; files
    written from transformers 5's module names say model.language_model.*, model.vision_tower.*, lm_head. Both
    load to the same logits."""
    other = tmp_path / layout
    shutil.copytree(vlm_dir, other)
    sd = safetensors.torch.load_file(str(other / "model.safetensors"))
    if layout == "hub_transformers4":
        renamed = {("vision_tower.vision_model." + k[len("vision_tower."):] if k.startswith("vision_tower.") else k): v
                   for k, v in sd.items()}
    else:
        renamed = {module_name(k): v for k, v in sd.items()}
    assert set(renamed) != set(sd)
    safetensors.torch.save_file(renamed, str(other / "model.safetensors"), metadata={"format": "pt"})
    ids, mask, types, _, pixels = batch()
    a, _, _ = ours(vlm_dir, tmp_path, ids, mask, types, pixels)
    b, _, _ = ours(other, tmp_path, ids, mask, types, pixels)
    np.testing.assert_array_equal(a, b)


def test_image_token_count_mismatch_is_an_error(vlm_dir, tmp_path):
    ids, mask, types, _, pixels = batch()
    with pytest.raises(OpError, match="image tokens"):
        ours(vlm_dir, tmp_path, ids, mask, types, pixels[:3])


def test_wrong_image_size_is_an_error(vlm_dir, tmp_path):
    ids, mask, types, _, _ = batch()
    with pytest.raises(OpError, match=r"pixel_values has shape \[4, 3, 16, 16\]"):
        ours(vlm_dir, tmp_path, ids, mask, types, torch.zeros(4, 3, 16, 16))


def test_vision_use_head_is_refused_with_the_key_named(vlm_dir, tmp_path):
    d = tmp_path / "head"
    shutil.copytree(vlm_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["vision_config"]["vision_use_head"] = True
    (d / "config.json").write_text(json.dumps(cfg))
    ids, mask, types, _, pixels = batch()
    with pytest.raises(OpError, match="vision_config.vision_use_head"):
        ours(d, tmp_path, ids, mask, types, pixels)


def test_embedded_tiny_gemma3_vlm_matches_transformers(tmp_path):
    """assets/tiny-gemma3-vlm (scripts/make_tiny_gemma3_vlm.py), the vision-language recipe's default."""
    import pathlib

    d = pathlib.Path(__file__).resolve().parents[2] / "assets" / "tiny-gemma3-vlm"
    cfg = json.loads((d / "config.json").read_text())
    n, image = cfg["mm_tokens_per_image"], cfg["image_token_index"]
    span = [cfg["boi_token_index"]] + [image] * n + [cfg["eoi_token_index"]]
    ids = torch.tensor([[2, 4, 40, 41] + span + [50, 51, 52, 5], [2, 4] + span + [60, 61, 62, 63, 64, 5]])
    mask = torch.ones_like(ids)
    types = (ids == image).long()
    size = cfg["vision_config"]["image_size"]
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = load_reference(d)(input_ids=ids, attention_mask=mask, token_type_ids=types, pixel_values=pixels).logits
    logits, _, _ = ours(d, tmp_path, ids, mask, types, pixels)
    assert rel_err(logits, ref) <= LOGITS_F32
