"""Idefics 3 / SmolVLM's processor against transformers + Pillow: pixel_values bit-identical to the slow
Idefics3ImageProcessor (SmolVLM's is the same code) for the shapes test_image_processor.py uses (1x1, 1x1000, 1000x3,
...) with image splitting on and off and several filters; input_ids identical to Idefics3Processor's for
processor(text, images) and apply_chat_template conversations with several images (SmolVLM's chat template); the VLM
collate of assets/tiny-vlm-data on assets/tiny-smolvlm equal to NeMo's default_collate_fn logic run through the
processor; a clear error for each bad input."""
import json
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import run_op
from test_image_processor import SHAPES
from test_vlm_collate import _build_labels_from_markers, _preload
from vlm_processor_util import _allow_processor_construction, ours, ours_error, photo, reference_image

ASSET = pathlib.Path(__file__).resolve().parents[2] / "assets" / "tiny-smolvlm"
DATA = pathlib.Path(__file__).resolve().parents[2] / "assets" / "tiny-vlm-data"


def save_processor(path, longest_edge=70, tile=24, resample=1, splitting=True, image_seq_len=3):
    """An Idefics3Processor with the asset's tokenizer and chat template, saved by transformers."""
    _allow_processor_construction()
    from transformers import AutoTokenizer, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": longest_edge}, max_image_size={"longest_edge": tile}, resample=resample,
        do_image_splitting=splitting, image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711])
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=AutoTokenizer.from_pretrained(ASSET),
                                  chat_template=(ASSET / "chat_template.jinja").read_text(),
                                  image_seq_len=image_seq_len)
    processor.save_pretrained(str(path))
    return processor


@pytest.fixture(scope="module")
def processors(tmp_path_factory):
    out = {}
    for name, kwargs in {"lanczos": {}, "bicubic": {"resample": 3}, "bilinear": {"resample": 2},
                         "no_split": {"splitting": False}}.items():
        d = tmp_path_factory.mktemp(name)
        out[name] = (d, save_processor(d, **kwargs))
    return out


def real_tiles(ref):
    """The processor's pixel_values without the all-zero tiles that pad each row to the batch's tile count."""
    pv = ref["pixel_values"].reshape(-1, *ref["pixel_values"].shape[2:])
    return pv[ref["pixel_attention_mask"].reshape(pv.shape[0], -1).any(-1)]


@pytest.mark.parametrize("name", ["lanczos", "bicubic", "bilinear", "no_split"])
def test_pixel_values_and_input_ids_bit_identical(processors, tmp_path, name):
    d, proc = processors[name]
    for h, w in SHAPES:
        path = tmp_path / "x.jpg"
        Image.fromarray(photo(h, w, seed=h * 7 + w)).save(path, quality=92)
        ref = proc(text="Look: <image> now.", images=[reference_image(path)], return_tensors="np")
        result, got = ours(d, [path], text="Look: <image> now.", tmp=tmp_path)
        want = real_tiles(ref)
        assert got.shape == want.shape, (h, w)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=f"{(h, w)} {name}")
        assert result["input_ids"] == ref["input_ids"][0].tolist(), (h, w)
        if name == "no_split":
            assert result["rows"] == [0] and got.shape[0] == 1


def test_asset_processor_camera_photo(tmp_path):
    """The asset's own settings on a camera-sized photo: 2 x 2 tiles and the global image."""
    _allow_processor_construction()
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(str(ASSET))
    path = tmp_path / "photo.jpg"
    Image.fromarray(photo(1200, 1600, seed=5)).save(path, quality=90)
    ref = proc(text="<image>", images=[reference_image(path)], return_tensors="np")
    result, got = ours(ASSET, [path], text="<image>", tmp=tmp_path)
    assert result["rows"] == [2] and result["cols"] == [2]
    np.testing.assert_array_equal(got.view(np.uint32), real_tiles(ref).view(np.uint32))
    assert result["input_ids"] == ref["input_ids"][0].tolist()


@pytest.fixture(scope="module")
def chat_images(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat_images")
    files = [d / "wide.jpg", d / "tall.png", d / "square.webp"]
    Image.fromarray(photo(60, 200, seed=1)).save(files[0], quality=90)
    Image.fromarray(photo(180, 50, seed=2)).save(files[1])
    Image.fromarray(photo(20, 20, seed=3)).save(files[2], quality=80)
    return files


@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_apply_chat_template_matches(processors, chat_images, tmp_path, add_generation_prompt):
    d, proc = processors["lanczos"]
    a, b, c = (str(f) for f in chat_images)
    messages = [
        {"role": "user", "content": [{"type": "image", "path": a}, {"type": "text", "text": "What is this?"},
                                     {"type": "image", "url": b}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Two red circles."}]},
        {"role": "user", "content": [{"type": "text", "text": "And here?"}, {"type": "image", "image": c}]},
    ]
    ref = proc.apply_chat_template(messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt,
                                   return_tensors="np")
    result, got = ours(d, messages=messages, tmp=tmp_path,
                       extra=["--add-generation-prompt"] if add_generation_prompt else [])
    assert result["input_ids"] == ref["input_ids"][0].tolist()
    assert result["rows"][0] < result["cols"][0] and result["rows"][1] > result["cols"][1]  # wide, tall
    np.testing.assert_array_equal(got.view(np.uint32), real_tiles(ref).view(np.uint32))


def test_image_count_must_match_placeholders(processors, chat_images, tmp_path):
    d, _ = processors["lanczos"]
    with pytest.raises(RuntimeError, match=r"the text has 1 image placeholders \(<image>\) but 2 images"):
        ours(d, chat_images[:2], text="one <image> only", tmp=tmp_path)


def test_bad_processor_settings_name_the_key(processors, chat_images, tmp_path):
    d, _ = processors["lanczos"]
    for key, value, match in [("size", {"height": 10, "width": 10}, "image_processor: size"),
                              ("max_image_size", {"longest_edge": 0}, "max_image_size.longest_edge"),
                              ("image_processor_type", "LlavaImageProcessor", "unsupported image processor")]:
        bad = tmp_path / key
        shutil.copytree(d, bad, dirs_exist_ok=True)
        config = json.loads((bad / "processor_config.json").read_text())
        config["image_processor"][key] = value
        (bad / "processor_config.json").write_text(json.dumps(config))
        assert match in ours_error(bad, chat_images[:1], tmp_path)
    bad = tmp_path / "mismatch"
    shutil.copytree(d, bad, dirs_exist_ok=True)
    config = json.loads((bad / "processor_config.json").read_text())
    config["processor_class"] = "Gemma3Processor"
    (bad / "processor_config.json").write_text(json.dumps(config))
    assert "does not go with image processor" in ours_error(bad, chat_images[:1], tmp_path)


# ---------------------------------------------------------------- the collate

def nemo_collate(processor, conversations):
    """default_collate_fn's logic through Idefics3Processor. The assistant marker is the chat template's text between
    a user turn and the answer without the trailing space ("Assistant:"), which a BPE merges into the answer's first
    word; labels on image tokens and <fake_token_around_image> are masked, as ours."""
    conversations = [_preload(c) for c in conversations]
    batch = processor.apply_chat_template(conversations, tokenize=True, return_dict=True, return_tensors="pt",
                                          processor_kwargs={"padding": True})
    tok = processor.tokenizer
    marker = tok.encode("Assistant:", add_special_tokens=False)
    labels = _build_labels_from_markers(batch["input_ids"], marker, tok.convert_tokens_to_ids("<end_of_utterance>"))
    for t in ("<image>", "<fake_token_around_image>"):
        labels[labels == tok.convert_tokens_to_ids(t)] = -100
    labels[batch["attention_mask"] == 0] = -100
    return batch, labels[:, 1:]


@pytest.mark.parametrize("side", ["right", "left"])
def test_tiny_vlm_data_collate_equals_nemo(tmp_path, side):
    _allow_processor_construction()
    from transformers import AutoProcessor

    d = tmp_path / "asset"
    shutil.copytree(ASSET, d)
    config = json.loads((d / "tokenizer_config.json").read_text())
    config["padding_side"] = side
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    processor = AutoProcessor.from_pretrained(str(d))
    records = [json.loads(line) for line in (DATA / "train.jsonl").read_text().splitlines()]
    for indices in ([0, 1, 2, 3], [len(records) - 1, 9, 43]):
        out = run_op("vlm_collate", {}, {"model_dir": str(d), "indices": indices, "dataset": {
            "_target_": "automodel.datasets.vlm.make_conversation_dataset", "path_or_dataset": str(DATA / "train.jsonl")}
        }).outputs
        convs = [[dict(m, content=[dict(p, image=str(DATA / p["image"])) if p.get("type") == "image" else p
                                   for p in m["content"]]) for m in records[i]["messages"]] for i in indices]
        ref, labels = nemo_collate(processor, convs)
        np.testing.assert_array_equal(out[0], ref["input_ids"][:, :-1].numpy())
        np.testing.assert_array_equal(out[1], ref["attention_mask"][:, :-1].numpy())
        np.testing.assert_array_equal(out[2], labels.numpy())
        assert (out[2] != -100).sum() > 0
        assert out[3].size == 0  # no token_type_ids for this family
        want = real_tiles({k: v.numpy() for k, v in ref.items() if k.startswith("pixel")})
        assert out[4].tobytes() == want.astype(np.float32).tobytes()
