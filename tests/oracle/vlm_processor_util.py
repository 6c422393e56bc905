"""Helpers for the image/processor oracle: tiny Gemma 3 processor directories written by transformers, test images
(photo-like content made with numpy, saved by Pillow in every format and mode), our side through the
`automodel preprocess` CLI and the reference: transformers' slow (PIL) Gemma3ImageProcessor and Gemma3Processor."""
import json
import pathlib
import subprocess

import numpy as np
from PIL import Image

from chat_template_util import CLI, TEMPLATES, tiny_tokenizer_object

GEMMA3_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                  "<end_of_image>", "<image_soft_token>"]


def _allow_processor_construction():
    """ProcessorMixin checks its tokenizer against every tokenizer class transformers knows, importing each; the
    venv's mistral_common lacks its jsonschema dependency, so its class is stood in for (our tokenizer is not one)."""
    import transformers.processing_utils as pu

    try:
        pu.transformers_module.MistralCommonBackend  # noqa: B018 - raises when its import fails
    except ImportError:
        setattr(pu.transformers_module, "MistralCommonBackend", type("MistralCommonBackend", (), {}))


def save_processor_dir(path, size=32, resample=2, image_seq_length=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                       do_resize=True, do_rescale=True, do_normalize=True):
    """A Gemma3Processor (tiny BPE tokenizer with Gemma 3's special tokens, the slow Gemma3ImageProcessor, Gemma 3's
    chat template) saved by transformers into `path`; returns the processor."""
    _allow_processor_construction()
    from transformers import Gemma3Processor, PreTrainedTokenizerFast
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    from tokenizers import processors

    # Gemma's tokenizer adds <bos> itself: the chat template's own <bos> must then not be doubled (transformers turns
    # add_special_tokens off when the rendered prompt starts with it), while processor(text=...) adds one.
    backend = tiny_tokenizer_object(GEMMA3_SPECIAL)
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", backend.token_to_id("<bos>"))])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
        pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"})
    height, width = (size, size) if isinstance(size, int) else size
    image_processor = Gemma3ImageProcessorPil(
        size={"height": height, "width": width}, resample=resample, image_mean=list(mean), image_std=list(std),
        rescale_factor=1 / 255, do_resize=do_resize, do_rescale=do_rescale, do_normalize=do_normalize)
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tok,
                                chat_template=(TEMPLATES / "gemma3.jinja").read_text(),
                                image_seq_length=image_seq_length)
    processor.save_pretrained(str(path))
    return processor


def load_processor(path):
    _allow_processor_construction()
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(path))


def photo(height, width, seed=0):
    """Photo-like RGB content: smooth illumination gradients, soft blobs, a few hard edges and sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    y /= max(height - 1, 1)
    x /= max(width - 1, 1)
    img = np.zeros((height, width, 3))
    for c in range(3):
        a, b, p = rng.uniform(-1, 1, 3)
        img[..., c] = 120 + 60 * np.sin(3 * a * x + 2 * b * y + p)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.4)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        img += blob[..., None] * rng.uniform(-90, 90, 3)
    edge = (x + 0.3 * y) > rng.uniform(0.3, 0.7)
    img[edge] *= rng.uniform(0.6, 1.1)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def ours(model_dir, images=(), messages=None, text=None, tmp=None, extra=()):
    """`automodel preprocess`: (json result, pixel_values array) or raises CalledProcessError-like AssertionError."""
    tmp = pathlib.Path(tmp)
    out = tmp / "pixels.npy"
    if out.exists():
        out.unlink()
    cmd = [str(CLI), "preprocess", *[str(p) for p in images], "--model", str(model_dir), "--out", str(out), *extra]
    if messages is not None:
        msg = tmp / "messages.json"
        msg.write_text(json.dumps(messages))
        cmd += ["--messages", str(msg)]
    if text is not None:
        cmd += ["--text", text]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return json.loads(r.stdout), np.load(out)


def ours_error(model_dir, images, tmp):
    """The stderr of a preprocess run expected to fail (with exit code 1, not a crash)."""
    cmd = [str(CLI), "preprocess", *[str(p) for p in images], "--model", str(model_dir)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, (r.returncode, r.stderr)
    return r.stderr


def reference_image(path):
    """transformers' load_image as the PIL image the processor is given (a numpy array of 1x1 or 1xN pixels would
    make transformers guess its channel axis)."""
    from transformers.image_utils import load_image

    return load_image(str(path))


def reference_decode(path):
    """transformers' load_image: PIL.Image.open, exif_transpose, convert("RGB")."""
    from transformers.image_utils import load_image

    return np.array(load_image(str(path)))
