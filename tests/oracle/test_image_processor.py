"""Images and the Gemma 3 processor against transformers + Pillow: decoding (every format and mode, EXIF
orientations) equal to transformers' load_image, pixel_values bit-identical to the slow Gemma3ImageProcessor (all of
Pillow's convolution filters, up and down, extreme aspect ratios, pan-and-scan), input_ids / token_type_ids identical
to Gemma3Processor's for processor(text, images) and apply_chat_template conversations, and a clear error naming the
file for each kind of bad image."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vlm_processor_util import (load_processor, ours, ours_error, photo, reference_decode, reference_image,
                                 save_processor_dir)


@pytest.fixture(scope="module")
def identity_dir(tmp_path_factory):
    """A processor that returns the decoded image itself (no resize, rescale or normalise): pixel_values = RGB."""
    d = tmp_path_factory.mktemp("identity")
    save_processor_dir(d, do_resize=False, do_rescale=False, do_normalize=False)
    return d


def png_bytes(rows, color_type, bit_depth, interlace=False):
    """A PNG written by hand (Pillow cannot write 16-bit colour, 2-bit grey or interlaced files): `rows` is a
    (height, width, channels) integer array of samples."""
    h, w = rows.shape[:2]
    samples = rows.reshape(h, w, -1)

    def scanlines(img):
        out = b""
        for row in img:
            if bit_depth == 16:
                data = row.astype(">u2").tobytes()
            elif bit_depth == 8:
                data = row.astype(np.uint8).tobytes()
            else:
                bits = np.unpackbits(row.astype(np.uint8).reshape(-1, 1), axis=1)[:, 8 - bit_depth:].reshape(-1)
                data = np.packbits(bits).tobytes()
            out += b"\x00" + data
        return out

    if interlace:
        raw = b""
        for y0, x0, dy, dx in [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2),
                               (1, 0, 2, 1)]:
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += scanlines(sub)
    else:
        raw = scanlines(samples)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def exif_with_orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def xmp_with_orientation(value, attribute=True):
    """An XMP packet with tiff:Orientation as an attribute (tiff:Orientation="6") or an element (<...>6<...>)."""
    field = f'tiff:Orientation="{value}"' if attribute else f">\n<tiff:Orientation>{value}</tiff:Orientation"
    return (f'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
            f'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
            f'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" {field}/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode()


def rgba(h, w, seed):
    a = photo(h, w, seed)
    alpha = (np.arange(h * w).reshape(h, w) * 7 % 256).astype(np.uint8)
    return np.dstack([a, alpha])


def make_case(name, path):
    """Writes test image `name` to `path` (suffix chosen here) and returns the path."""
    a = photo(37, 53, seed=len(name))
    im = Image.fromarray(a)
    kind, _, variant = name.partition(":")
    if kind == "jpeg":
        p = path.with_suffix(".jpg")
        opts = {"q90": dict(quality=90), "q40_420": dict(quality=40, subsampling=2), "444": dict(subsampling=0),
                "422": dict(subsampling=1), "progressive": dict(progressive=True, quality=85),
                "optimize": dict(optimize=True)}
        if variant == "grey":
            im.convert("L").save(p, quality=88)
        elif variant == "cmyk":
            im.convert("CMYK").save(p, quality=90)
        elif variant == "exif_and_xmp":  # the EXIF orientation wins
            im.save(p, quality=90, exif=exif_with_orientation(3), xmp=xmp_with_orientation(6))
        elif variant == "exif_without_orientation_and_xmp":
            exif = Image.Exif()
            exif[0x010F] = "camera maker"
            im.save(p, quality=90, exif=exif.tobytes(), xmp=xmp_with_orientation(8))
        elif variant.startswith("exif"):
            im.save(p, quality=90, exif=exif_with_orientation(int(variant[4:])))
        elif variant.startswith("xmp"):  # no EXIF: Pillow reads the XMP packet's orientation
            im.save(p, quality=90, xmp=xmp_with_orientation(int(variant[3:]), attribute=variant != "xmp7"))
        else:
            im.save(p, **opts[variant])
        return p
    if kind == "png":
        p = path.with_suffix(".png")
        rng = np.random.default_rng(len(variant))
        if variant == "rgb":
            im.save(p)
        elif variant == "rgba":
            Image.fromarray(rgba(37, 53, 1)).save(p)
        elif variant == "l":
            im.convert("L").save(p)
        elif variant == "la":
            im.convert("LA").save(p)
        elif variant == "1bit":
            im.convert("1").save(p)
        elif variant == "p_transparency":
            im.quantize(40).save(p, transparency=5)
        elif variant == "p_4bit":
            im.quantize(12).save(p, bits=4)
        elif variant == "l_transparency":
            im.convert("L").save(p, transparency=17)
        elif variant == "i16":
            Image.fromarray((rng.integers(0, 65536, (37, 53))).astype(np.uint16)).save(p)
        elif variant == "i16_low":
            Image.fromarray((rng.integers(0, 300, (37, 53))).astype(np.uint16)).save(p)
        elif variant == "rgb16":
            p.write_bytes(png_bytes(rng.integers(0, 65536, (37, 53, 3)), 2, 16))
        elif variant == "rgba16":
            p.write_bytes(png_bytes(rng.integers(0, 65536, (37, 53, 4)), 6, 16))
        elif variant == "la16":
            p.write_bytes(png_bytes(rng.integers(0, 65536, (37, 53, 2)), 4, 16))
        elif variant == "grey2":
            p.write_bytes(png_bytes(rng.integers(0, 4, (37, 53, 1)), 0, 2))
        elif variant == "grey4":
            p.write_bytes(png_bytes(rng.integers(0, 16, (37, 53, 1)), 0, 4))
        elif variant == "interlaced":
            p.write_bytes(png_bytes(a, 2, 8, interlace=True))
        elif variant == "interlaced_rgba16":
            p.write_bytes(png_bytes(rng.integers(0, 65536, (37, 53, 4)), 6, 16, interlace=True))
        elif variant.startswith("exif"):
            im.save(p, exif=exif_with_orientation(int(variant[4:])))
        elif variant.startswith("xmp"):
            from PIL import PngImagePlugin

            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp_with_orientation(int(variant[3:])).decode())
            im.save(p, pnginfo=info)
        elif variant.startswith("apng"):  # animated: Pillow opens the first frame (or the default image before it)
            frames = [Image.fromarray(photo(37, 53, seed=s)) for s in range(3)]
            frames[0].save(p, save_all=True, append_images=frames[1:], duration=100,
                           default_image=variant == "apng_default")
        elif variant == "palette_out_of_range":  # indices past a 3-colour palette show black
            idx = (np.arange(37 * 53).reshape(37, 53, 1) % 8).astype(np.uint8)
            data = png_bytes(idx, 3, 8)
            plte = bytes([10, 20, 30, 40, 50, 60, 70, 80, 90])
            plte_chunk = struct.pack(">I", 9) + b"PLTE" + plte + struct.pack(">I", zlib.crc32(b"PLTE" + plte))
            p.write_bytes(data[:33] + plte_chunk + data[33:])
        return p
    if kind == "webp":
        p = path.with_suffix(".webp")
        if variant == "lossy":
            im.save(p, quality=75)
        elif variant == "lossless":
            im.save(p, lossless=True)
        elif variant == "lossy_alpha":
            Image.fromarray(rgba(37, 53, 2)).save(p, quality=60)
        elif variant == "lossless_alpha":
            Image.fromarray(rgba(37, 53, 3)).save(p, lossless=True)
        elif variant.startswith("exif"):
            im.save(p, quality=80, exif=exif_with_orientation(int(variant[4:])))
        elif variant.startswith("xmp"):
            im.save(p, quality=80, xmp=xmp_with_orientation(int(variant[3:])))
        elif variant.startswith("animated"):  # Pillow opens the first frame
            frames = [Image.fromarray(photo(37, 53, seed=s)) for s in range(3)]
            frames[0].save(p, save_all=True, append_images=frames[1:], duration=100,
                           lossless=variant == "animated_lossless", quality=70)
        return p
    raise AssertionError(name)


DECODE_CASES = (
    ["jpeg:q90", "jpeg:q40_420", "jpeg:444", "jpeg:422", "jpeg:progressive", "jpeg:optimize", "jpeg:grey",
     "jpeg:cmyk"]
    + [f"jpeg:exif{o}" for o in range(1, 9)]
    + ["jpeg:xmp6", "jpeg:xmp7", "jpeg:exif_and_xmp", "jpeg:exif_without_orientation_and_xmp"]
    + ["png:rgb", "png:rgba", "png:l", "png:la", "png:1bit", "png:p_transparency", "png:p_4bit", "png:l_transparency",
       "png:i16", "png:i16_low", "png:rgb16", "png:rgba16", "png:la16", "png:grey2", "png:grey4", "png:interlaced",
       "png:interlaced_rgba16", "png:exif6", "png:exif3", "png:apng", "png:apng_default", "png:palette_out_of_range",
       "png:xmp5"]
    + ["webp:lossy", "webp:lossless", "webp:lossy_alpha", "webp:lossless_alpha", "webp:exif8", "webp:exif5",
       "webp:animated_lossy", "webp:animated_lossless", "webp:xmp8"]
)


@pytest.mark.parametrize("name", DECODE_CASES)
def test_decoding_equals_load_image(identity_dir, tmp_path, name):
    path = make_case(name, tmp_path / "image")
    ref = reference_decode(path)
    _, pixels = ours(identity_dir, [path], tmp=tmp_path)
    got = pixels[0].transpose(1, 2, 0)
    assert got.shape == ref.shape, (Image.open(path).mode, got.shape, ref.shape)
    np.testing.assert_array_equal(got, ref.astype(np.float32))


# (height, width): photos, tiny, extreme aspect ratios, up- and downscaling on each axis.
SHAPES = [(37, 53), (1, 1), (1, 1000), (1000, 3), (3, 1000), (300, 80), (10, 12), (480, 640), (97, 31)]


@pytest.fixture(scope="module")
def processor_dirs(tmp_path_factory):
    dirs = {}
    for resample in (1, 2, 3, 4, 5):  # lanczos, bilinear, bicubic, box, hamming
        d = tmp_path_factory.mktemp(f"processor{resample}")
        save_processor_dir(d, size=(24, 40), resample=resample, mean=(0.48145466, 0.4578275, 0.40821073),
                           std=(0.26862954, 0.26130258, 0.27577711))
        dirs[resample] = d
    return dirs


@pytest.mark.parametrize("resample", [1, 2, 3, 4, 5])
def test_pixel_values_bit_identical(processor_dirs, tmp_path, resample):
    proc = load_processor(processor_dirs[resample])
    for h, w in SHAPES:
        path = tmp_path / "x.jpg"
        Image.fromarray(photo(h, w, seed=h * 7 + w)).save(path, quality=92)
        ref = proc.image_processor(reference_image(path), return_tensors="np")["pixel_values"]
        _, got = ours(processor_dirs[resample], [path], tmp=tmp_path)
        assert got.shape == ref.shape
        np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32), err_msg=f"{(h, w)} resample {resample}")


def test_gemma3_sized_photo_bit_identical(tmp_path):
    """Gemma 3's own settings (896x896, bilinear, mean = std = 0.5) on a camera-sized photo."""
    d = tmp_path / "gemma3"
    proc = save_processor_dir(d, size=896, resample=2, image_seq_length=8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(photo(1200, 1600, seed=5)).save(path, quality=90)
    ref = proc.image_processor(reference_image(path), return_tensors="np")["pixel_values"]
    _, got = ours(d, [path], tmp=tmp_path)
    np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("shape", [(100, 400), (400, 90), (60, 70), (100, 1000), (50, 73), (73, 50), (30, 301)])
@pytest.mark.parametrize("settings", [(20, 3, 1.2), (16, 4, 1.5), (40, 2, 1.1)])
def test_pan_and_scan_bit_identical(processor_dirs, tmp_path, shape, settings):
    min_crop, max_crops, ratio = settings
    proc = load_processor(processor_dirs[2])
    path = tmp_path / "x.png"
    Image.fromarray(photo(*shape, seed=shape[0])).save(path)
    ref = proc.image_processor(reference_image(path), return_tensors="np", do_pan_and_scan=True,
                               pan_and_scan_min_crop_size=min_crop, pan_and_scan_max_num_crops=max_crops,
                               pan_and_scan_min_ratio_to_activate=ratio)
    result, got = ours(processor_dirs[2], [path], tmp=tmp_path,
                       extra=["--do-pan-and-scan", "--pan-and-scan-min-crop-size", str(min_crop),
                              "--pan-and-scan-max-num-crops", str(max_crops),
                              "--pan-and-scan-min-ratio-to-activate", str(ratio)])
    assert result["num_crops"] == list(ref["num_crops"])
    np.testing.assert_array_equal(got.view(np.uint32), ref["pixel_values"].view(np.uint32))


# ---------------------------------------------------------------- the text side

def conversation(files):
    a, b, c = (str(f) for f in files)
    return [
        {"role": "system", "content": [{"type": "text", "text": "You describe pictures."}]},
        {"role": "user", "content": [{"type": "image", "path": a}, {"type": "text", "text": "What is this?"},
                                     {"type": "image", "url": b}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Two quick brown foxes."}]},
        {"role": "user", "content": [{"type": "text", "text": "And here?"}, {"type": "image", "image": c}]},
    ]


@pytest.fixture(scope="module")
def chat_images(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat_images")
    files = [d / "wide.jpg", d / "tall.png", d / "square.webp"]
    Image.fromarray(photo(60, 200, seed=1)).save(files[0], quality=90)
    Image.fromarray(photo(180, 50, seed=2)).save(files[1])
    Image.fromarray(photo(64, 64, seed=3)).save(files[2], quality=80)
    return files


@pytest.mark.parametrize("pan_and_scan", [False, True])
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_apply_chat_template_matches(processor_dirs, chat_images, tmp_path, pan_and_scan, add_generation_prompt):
    d = processor_dirs[2]
    proc = load_processor(d)
    messages = conversation(chat_images)
    kwargs = dict(do_pan_and_scan=True, pan_and_scan_min_crop_size=24) if pan_and_scan else {}
    ref = proc.apply_chat_template(messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt,
                                   return_tensors="np", **kwargs)
    extra = ["--do-pan-and-scan", "--pan-and-scan-min-crop-size", "24"] if pan_and_scan else []
    if add_generation_prompt:
        extra.append("--add-generation-prompt")
    result, got = ours(d, messages=messages, tmp=tmp_path, extra=extra)
    bos = proc.tokenizer.bos_token_id
    assert result["input_ids"].count(bos) == 1  # the template's; the tokenizer's own is not added again
    assert result["input_ids"] == ref["input_ids"][0].tolist()
    assert result["token_type_ids"] == ref["token_type_ids"][0].tolist()
    if pan_and_scan:
        assert result["num_crops"] != [0, 0, 0]
    np.testing.assert_array_equal(got.view(np.uint32), ref["pixel_values"].view(np.uint32))


@pytest.mark.parametrize("text", ["<start_of_image>", "Compare <start_of_image> with<start_of_image>, please.",
                                  "no placeholder: images go first"])
def test_processor_call_matches(processor_dirs, chat_images, tmp_path, text):
    d = processor_dirs[2]
    proc = load_processor(d)
    images = chat_images[:max(1, text.count("<start_of_image>"))]
    if "<start_of_image>" not in text:
        ref = proc(images=[reference_image(f) for f in images], return_tensors="np")
        result, _ = ours(d, images, tmp=tmp_path)
    else:
        ref = proc(text=text, images=[reference_image(f) for f in images], return_tensors="np")
        result, _ = ours(d, images, text=text, tmp=tmp_path)
    assert result["input_ids"][0] == proc.tokenizer.bos_token_id
    assert result["input_ids"] == ref["input_ids"][0].tolist()
    assert result["token_type_ids"] == ref["token_type_ids"][0].tolist()


# ---------------------------------------------------------------- bad inputs

def test_truncated_jpeg(identity_dir, tmp_path):
    p = tmp_path / "cut.jpg"
    Image.fromarray(photo(64, 64)).save(p, quality=90)
    p.write_bytes(p.read_bytes()[:900])
    err = ours_error(identity_dir, [p], tmp_path)
    assert str(p) in err and "truncated" in err


def test_corrupt_png_crc(identity_dir, tmp_path):
    p = tmp_path / "crc.png"
    Image.fromarray(photo(20, 20)).save(p)
    data = bytearray(p.read_bytes())
    data[29] ^= 0xFF  # inside the IHDR chunk's CRC
    p.write_bytes(bytes(data))
    err = ours_error(identity_dir, [p], tmp_path)
    assert str(p) in err and "PNG" in err


def test_truncated_png_and_webp(identity_dir, tmp_path):
    for suffix in (".png", ".webp"):
        p = tmp_path / f"cut{suffix}"
        Image.fromarray(photo(64, 64)).save(p)
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
        err = ours_error(identity_dir, [p], tmp_path)
        assert str(p) in err


def test_zero_byte_file(identity_dir, tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    err = ours_error(identity_dir, [p], tmp_path)
    assert str(p) in err and "empty" in err


def test_text_file_named_png(identity_dir, tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("these are not pixels\n")
    err = ours_error(identity_dir, [p], tmp_path)
    assert str(p) in err and "not an image" in err


def test_unsupported_format(identity_dir, tmp_path):
    p = tmp_path / "anim.gif"
    Image.fromarray(photo(8, 8)).save(p)
    err = ours_error(identity_dir, [p], tmp_path)
    assert str(p) in err and "GIF" in err


def test_huge_declared_size(identity_dir, tmp_path):
    """A 100000 x 100000 PNG header (10^10 pixels, over Pillow's limit) is refused before any pixel is decoded."""
    p = tmp_path / "bomb.png"
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    err = ours_error(identity_dir, [p], tmp_path)
    assert str(p) in err and "pixels" in err and "limit" in err
    # The same guard in a JPEG's and a WebP's header.
    j = tmp_path / "bomb.jpg"
    Image.fromarray(photo(16, 16)).save(j)
    data = bytearray(j.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)
    j.write_bytes(bytes(data))
    err = ours_error(identity_dir, [j], tmp_path)
    assert str(j) in err and "limit" in err


def test_missing_file_and_directory(identity_dir, tmp_path):
    err = ours_error(identity_dir, [tmp_path / "nowhere.jpg"], tmp_path)
    assert "nowhere.jpg" in err
    err = ours_error(identity_dir, [tmp_path], tmp_path)
    assert "directory" in err


def test_image_count_must_match_placeholders(identity_dir, chat_images, tmp_path):
    with pytest.raises(RuntimeError, match="2 image placeholders .* but 1 images"):
        ours(identity_dir, chat_images[:1], text="<start_of_image> and <start_of_image>", tmp=tmp_path)
