"""Idefics 3 / SmolVLM against transformers: tiny random Idefics3ForConditionalGeneration and
SmolVLMForConditionalGeneration written by transformers (a 2-layer SigLIP tower on 32x32 tiles in 8x8 patches,
pixel shuffle by 2 to 4 tokens per tile, a 3-layer Llama decoder). A batch of three rows: two images of 1 and 3
tiles, no image, one image of 5 tiles, padded to 5 tiles per row with all-zero tiles (dropped by the model), one
tile partially padded through pixel_attention_mask (bucketed position ids, masked keys); right and left padding.

Tolerances as test_vlm_models.py: fp32 logits 1e-5 relative, loss 1e-6, every parameter gradient 1e-4; greedy
generation of 32 tokens identical; a directory we save loads in transformers with no missing keys and identical
logits."""
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
IMAGE, FAKE, GLOBAL = 990, 991, 992
TOKENS_PER_TILE, TILE = 4, 32
FAMILIES = {"smolvlm": (transformers.SmolVLMConfig, transformers.SmolVLMForConditionalGeneration),
            "idefics3": (transformers.Idefics3Config, transformers.Idefics3ForConditionalGeneration)}


def build(out_dir, family, seed=0, tie=False):
    config_class, model_class = FAMILIES[family]
    text = dict(
        model_type="llama", vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
        rope_theta=1000.0, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, tie_word_embeddings=tie,
    )
    vision = dict(image_size=TILE, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, layer_norm_eps=1e-5)
    config = config_class(text_config=text, vision_config=vision, image_token_id=IMAGE, scale_factor=2,
                          tie_word_embeddings=tie)
    torch.manual_seed(seed)
    model = model_class(config).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "layer_norm" in name or "layernorm" in name:
                p.copy_((1.0 + 0.2 * noise) if name.endswith("weight") else 0.1 * noise)
            elif "norm" in name and p.dim() == 1:
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            elif "position_embedding" in name or "modality_projection" in name:
                p.copy_(0.2 * noise)
    model.save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="module", params=list(FAMILIES))
def vlm(request, tmp_path_factory):
    family = request.param
    return family, build(tmp_path_factory.mktemp(family) / "model", family, tie=family == "smolvlm")


def load_reference(family, model_dir):
    return FAMILIES[family][1].from_pretrained(str(model_dir), attn_implementation="eager",
                                               dtype=torch.float32).eval()


def tile_span(rows, cols):
    """The processor's expansion of one image of rows x cols tiles (0 x 0: the global image alone), with its
    <row_r_col_c> tokens stood in for by plain ids."""
    tokens = [FAKE, GLOBAL] + [IMAGE] * TOKENS_PER_TILE + [FAKE]
    if rows == 0:
        return tokens
    split = []
    for r in range(rows):
        for c in range(cols):
            split += [FAKE, 100 + 10 * r + c] + [IMAGE] * TOKENS_PER_TILE
        split.append(13)
    return split + [13] + tokens


def batch(partial=True):
    """Three rows of 60: images of 1 and 3 tiles, no padding; no image, right-padded; an image of 5 tiles,
    left-padded. pixel_values [3, 5, 3, 32, 32] with all-zero padding tiles; one tile's bottom-right is padding."""
    g = torch.Generator().manual_seed(7)

    def text(n):
        return torch.randint(4, 90, (n,), generator=g).tolist()

    rows = [
        [BOS] + text(2) + tile_span(0, 0) + text(3) + tile_span(2, 1) + text(3),
        [BOS] + text(20),
        [BOS] + text(3) + tile_span(2, 2) + text(2),
    ]
    T = max(len(r) for r in rows)
    ids = torch.full((3, T), PAD)
    mask = torch.zeros(3, T, dtype=torch.int64)
    ids[0, : len(rows[0])], mask[0, : len(rows[0])] = torch.tensor(rows[0]), 1
    ids[1, : len(rows[1])], mask[1, : len(rows[1])] = torch.tensor(rows[1]), 1
    ids[2, T - len(rows[2]) :], mask[2, T - len(rows[2]) :] = torch.tensor(rows[2]), 1
    labels = ids.clone()
    labels[(mask == 0) | (ids == IMAGE) | (ids == BOS)] = -100
    tiles = [4, 0, 5]
    pixels = torch.zeros(3, 5, 3, TILE, TILE)
    pixel_mask = torch.zeros(3, 5, TILE, TILE, dtype=torch.int64)
    for b, n in enumerate(tiles):
        pixels[b, :n] = torch.randn(n, 3, TILE, TILE, generator=g)
        pixel_mask[b, :n] = 1
    if partial:
        pixels[2, 1, :, 20:, :] = 0
        pixels[2, 1, :, :, 12:] = 0
        pixel_mask[2, 1, 20:, :] = 0
        pixel_mask[2, 1, :, 12:] = 0
    return ids, mask, labels, pixels, pixel_mask


def ours(model_dir, tmp_path, ids, mask, pixels, pixel_mask=None, labels=None, **params):
    names_out = tmp_path / "names.json"
    inputs = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "pixel_values": pixels.numpy()}
    if pixel_mask is not None:
        inputs["pixel_attention_mask"] = pixel_mask.numpy()
    if labels is not None:
        inputs["labels"] = labels.numpy()
    r = run_op("vlm", inputs, {"model_dir": str(model_dir), "names_out": str(names_out), **params})
    if labels is None:
        return r.outputs[0], None, None
    names = json.loads(names_out.read_text())
    return r.outputs[0], float(r.outputs[1]), dict(zip(names, r.outputs[2:]))


def masked(x, mask):
    m = mask.numpy().astype(bool)
    return x[m] if isinstance(x, np.ndarray) else x[torch.from_numpy(m)]


@pytest.mark.parametrize("kernels", ["fused", "eager"])
def test_fp32_logits_loss_and_every_gradient_match_transformers(vlm, tmp_path, kernels):
    family, d = vlm
    ids, mask, labels, pixels, pixel_mask = batch()
    model = load_reference(family, d)
    out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, pixel_attention_mask=pixel_mask,
                labels=labels)
    out.loss.backward()
    ref_grads = {n: p.grad for n, p in model.named_parameters()}
    params = {} if kernels == "fused" else {"fused": False, "flash_attention": False}
    logits, loss, grads = ours(d, tmp_path, ids, mask, pixels, pixel_mask, labels, **params)

    e_logits = rel_err(masked(logits, mask), masked(out.logits.detach(), mask))
    assert e_logits <= LOGITS_F32, f"logits relative error {e_logits:.3e}"
    assert abs(loss - out.loss.item()) <= LOSS_F32 * abs(out.loss.item()), (loss, out.loss.item())
    assert set(grads) == set(ref_grads), (sorted(set(grads) ^ set(ref_grads)))
    assert "model.connector.modality_projection.proj.weight" in grads
    assert any(n.startswith("model.vision_model.encoder.") for n in grads)
    # A key bias adds the same q.b to every score of a query (no RoPE in the tower), which softmax ignores.
    zero = [n for n in ref_grads if n.startswith("model.vision_model.") and n.endswith("k_proj.bias")]
    largest = max(float(g.abs().max()) for g in ref_grads.values())
    for n in zero:
        assert max(np.abs(grads[n]).max(), float(ref_grads[n].abs().max())) <= 1e-6 * largest, n
    bad = {n: f"{rel_err(grads[n], ref_grads[n].numpy()):.2e}" for n in ref_grads
           if n not in zero and rel_err(grads[n], ref_grads[n].numpy()) > GRAD_F32}
    assert not bad, f"gradients over {GRAD_F32:.0e}: {bad}"


def test_bf16_logits_match_transformers_bf16(vlm, tmp_path):
    """As test_vlm_models.py: within 3e-2 of transformers in bf16, and no further from fp32 than transformers' bf16 run
    is (x 1.25 + 5e-3)."""
    family, d = vlm
    ids, mask, _, pixels, pixel_mask = batch()
    with torch.no_grad():
        ref_f32 = load_reference(family, d)(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                                            pixel_attention_mask=pixel_mask).logits
        model = FAMILIES[family][1].from_pretrained(str(d), attn_implementation="eager", dtype=torch.bfloat16).eval()
        ref_bf16 = model(input_ids=ids, attention_mask=mask, pixel_values=pixels.bfloat16(),
                         pixel_attention_mask=pixel_mask).logits.float()
    logits, _, _ = ours(d, tmp_path, ids, mask, pixels, pixel_mask, dtype="bf16")
    err = rel_err(masked(logits, mask), masked(ref_bf16, mask))
    ours_f32 = rel_err(masked(logits, mask), masked(ref_f32, mask))
    hf_f32 = rel_err(masked(ref_bf16.numpy(), mask), masked(ref_f32, mask))
    assert err <= 3e-2, f"bf16 logits relative error {err:.3e} against transformers bf16"
    assert ours_f32 <= 1.25 * hf_f32 + 5e-3, f"bf16 vs fp32 {ours_f32:.3e}, transformers' {hf_f32:.3e}"


def test_partial_tile_changes_the_logits_and_flat_tiles_match(vlm, tmp_path):
    """The pixel mask matters (bucketed positions, masked keys), and the tiles passed flat ([tiles, 3, H, W], the
    collate's form) give the batched 5-D result."""
    family, d = vlm
    ids, mask, _, pixels, pixel_mask = batch()
    with torch.no_grad():
        ref_unmasked = load_reference(family, d)(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    unmasked, _, _ = ours(d, tmp_path, ids, mask, pixels)
    assert rel_err(masked(unmasked, mask), masked(ref_unmasked, mask)) <= LOGITS_F32
    with_mask, _, _ = ours(d, tmp_path, ids, mask, pixels, pixel_mask)
    assert not np.allclose(with_mask, unmasked)
    real = pixel_mask.reshape(15, -1).any(-1)
    flat, _, _ = ours(d, tmp_path, ids, mask, pixels.reshape(15, 3, TILE, TILE)[real],
                      pixel_mask.reshape(15, TILE, TILE)[real])
    np.testing.assert_array_equal(flat, with_mask)


@pytest.mark.parametrize("tiles", [1, 5])
def test_greedy_generation_with_images_is_token_identical(vlm, tiles):
    family, d = vlm
    span = tile_span(0, 0) if tiles == 1 else tile_span(2, 2)
    ids = torch.tensor([[BOS, 17, 23, 45] + span + [31, 7, 50]])
    pixels = torch.randn(1, tiles, 3, TILE, TILE, generator=torch.Generator().manual_seed(3))
    model = load_reference(family, d)
    with torch.no_grad():
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), pixel_values=pixels, do_sample=False,
                             max_new_tokens=32)
    ref = ref[0, ids.shape[1]:].tolist()
    r = run_op("vlm_generate", {"prompt": ids[0].numpy(), "pixel_values": pixels.numpy()},
               {"model_dir": str(d), "max_new_tokens": 32})
    assert r.outputs[0].tolist() == ref


def test_sequence_logprobs_match_transformers(vlm):
    family, d = vlm
    ids = torch.tensor([[BOS, 17, 23] + tile_span(2, 1) + [31, 7, 50, 12]])
    pixels = torch.randn(3, 3, TILE, TILE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = load_reference(family, d)(input_ids=ids, pixel_values=pixels[None]).logits[0].double()
    ref = torch.log_softmax(logits[:-1], -1).gather(1, ids[0, 1:, None])[:, 0]
    r = run_op("vlm_logprobs", {"tokens": ids[0].numpy(), "pixel_values": pixels.numpy()}, {"model_dir": str(d)})
    assert rel_err(r.outputs[0], ref) <= LOGITS_F32


def test_saved_directory_loads_in_transformers_with_identical_logits(vlm, tmp_path):
    family, d = vlm
    out = tmp_path / "saved"
    run_op("vlm_save", {}, {"model_dir": str(d), "out_dir": str(out)})
    ref_sd = safetensors.torch.load_file(str(d / "model.safetensors"))
    our_sd = safetensors.torch.load_file(str(out / "model.safetensors"))
    assert sorted(our_sd) == sorted(ref_sd)
    for k, v in ref_sd.items():
        assert torch.equal(our_sd[k], v), k
    original = json.loads((d / "config.json").read_text())
    saved = json.loads((out / "config.json").read_text())
    original.pop("transformers_version", None)
    assert saved["model_type"] == family and saved["scale_factor"] == original["scale_factor"]
    reloaded, info = FAMILIES[family][1].from_pretrained(str(out), attn_implementation="eager",
                                                         output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids, mask, _, pixels, pixel_mask = batch()
    with torch.no_grad():
        a = load_reference(family, d)(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                                      pixel_attention_mask=pixel_mask)
        b = reloaded.eval()(input_ids=ids, attention_mask=mask, pixel_values=pixels, pixel_attention_mask=pixel_mask)
    assert torch.equal(a.logits, b.logits)


@pytest.mark.parametrize("side", [2, 3, 7, 26, 27, 29, 37, 64])
def test_bucketed_position_ids_match_torch(side):
    """Idefics3VisionEmbeddings' float32 bucketing for full and partial grids of several sizes."""
    emb = transformers.models.idefics3.modeling_idefics3.Idefics3VisionEmbeddings(
        transformers.Idefics3VisionConfig(image_size=side, patch_size=1, hidden_size=2))
    captured = {}
    emb.position_embedding.register_forward_hook(lambda m, i, o: captured.update(ids=i[0]))
    masks = torch.zeros(3, side, side, dtype=torch.bool)
    masks[0] = True
    masks[1, : max(1, side // 2), : max(1, side - 1)] = True
    masks[2, :1, : max(1, side // 3)] = True
    with torch.no_grad():
        emb(torch.zeros(3, 3, side, side), masks)
    r = run_op("vlm_position_ids", {"patch_mask": masks.long().numpy()}, {"side": side})
    np.testing.assert_array_equal(r.outputs[0], captured["ids"].numpy())


def test_image_token_count_mismatch_is_an_error(vlm, tmp_path):
    _, d = vlm
    ids, mask, _, pixels, _ = batch(partial=False)
    pixels[2, 4] = 0  # one tile fewer
    with pytest.raises(OpError, match="image tokens.*all-zero padding tiles do not count"):
        ours(d, tmp_path, ids, mask, pixels)


def test_bad_pixel_attention_mask_is_an_error(vlm, tmp_path):
    _, d = vlm
    ids, mask, _, pixels, pixel_mask = batch()
    with pytest.raises(OpError, match="pixel_attention_mask has shape"):
        ours(d, tmp_path, ids, mask, pixels, pixel_mask[:, :, :16])
    pixel_mask[0, 0, :, :8] = 0  # the tile's first patch column is padding
    with pytest.raises(OpError, match="first patch row or column"):
        ours(d, tmp_path, ids, mask, pixels, pixel_mask)


def test_bad_pixel_values_are_errors(vlm, tmp_path):
    _, d = vlm
    ids, mask, _, pixels, _ = batch()
    with pytest.raises(OpError, match=r"pixel_values has shape \[3, 5, 3\]"):
        ours(d, tmp_path, ids, mask, pixels[:, :, :, 0, 0])
    with pytest.raises(OpError, match=r"pixel_values has shape \[9, 3, 16, 16\]; the vision tower takes"):
        ours(d, tmp_path, ids, mask, pixels.reshape(15, 3, TILE, TILE)[:, :, :16, :16].contiguous())


def test_bad_config_names_the_key(vlm, tmp_path):
    _, d = vlm
    ids, mask, _, pixels, _ = batch()
    for key, value, match in [("scale_factor", 3, "scale_factor.*does not divide"),
                              ("scale_factor", 0, "scale_factor.*positive integer"),
                              ("image_token_id", -1, "image_token_id.*non-negative"),
                              ("vision_config", {"model_type": "clip_vision_model"}, "vision_config.model_type")]:
        bad = tmp_path / key
        shutil.copytree(d, bad, dirs_exist_ok=True)
        cfg = json.loads((bad / "config.json").read_text())
        cfg[key] = value if key != "vision_config" else {**cfg["vision_config"], **value}
        (bad / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(OpError, match=match):
            ours(bad, tmp_path, ids, mask, pixels)
