"""Writes assets/tiny-vlm-data: small generated pictures (1 to 4 shapes of one kind and colour on a plain background,
64x64 PNG) and conversations about them (captions, colour / shape / count questions, multi-turn and two-image
comparisons) as train.jsonl and validation.jsonl in NeMo's VLM conversation format, image paths relative to the files.
The embedded default data of `automodel finetune vlm -c examples/vlm_finetune/tiny_gemma3.yaml`.

Rerunnable and deterministic: .venv/bin/python scripts/make_tiny_vlm_data.py [OUT_DIR]"""
import json
import pathlib
import random
import shutil
import sys

from PIL import Image, ImageDraw

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = 64
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ["circle", "square", "triangle"]
NUMBERS = ["one", "two", "three", "four"]
BACKGROUNDS = [(255, 255, 255), (235, 235, 235)]


def draw_shape(draw, shape, box, colour):
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)


def picture(rng):
    """(image, facts): `count` shapes of one kind and colour, each in its own quarter of the picture."""
    shape, colour, count = rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.randint(1, 4)
    image = Image.new("RGB", (SIZE, SIZE), rng.choice(BACKGROUNDS))
    draw = ImageDraw.Draw(image)
    half = SIZE // 2
    for cell in rng.sample(range(4), count):
        cx, cy = (cell % 2) * half, (cell // 2) * half
        size = rng.randint(14, 24)
        x0, y0 = cx + rng.randint(2, half - size - 2), cy + rng.randint(2, half - size - 2)
        draw_shape(draw, shape, (x0, y0, x0 + size, y0 + size), COLOURS[colour])
    return image, {"shape": shape, "colour": colour, "count": count}


def caption(f):
    noun = f["shape"] + ("s" if f["count"] > 1 else "")
    return f"{NUMBERS[f['count'] - 1].capitalize()} {f['colour']} {noun}."


def user(*parts):
    return {"role": "user", "content": list(parts)}


def assistant(text):
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def image(path):
    return {"type": "image", "image": path}


def text(t):
    return {"type": "text", "text": t}


def conversations(rng, pictures):
    """One conversation per picture (its kind chosen in turn), plus two-picture comparisons."""
    out = []
    for i, (path, f) in enumerate(pictures):
        kind = i % 5
        if kind == 0:
            out.append([user(image(path), text("Describe this image.")), assistant(caption(f))])
        elif kind == 1:
            out.append([user(image(path), text("What colour are the shapes?")), assistant(f["colour"].capitalize())])
        elif kind == 2:
            out.append([user(text("How many shapes are there?"), image(path)),
                        assistant(NUMBERS[f["count"] - 1].capitalize())])
        elif kind == 3:
            out.append([user(image(path), text("Which shape is drawn?")), assistant(f"A {f['shape']}.")])
        else:
            out.append([user(image(path), text("What shape do you see?")), assistant(f"A {f['shape']}."),
                        user(text("And how many of them?")), assistant(NUMBERS[f["count"] - 1].capitalize())])
    for _ in range(len(pictures) // 4):
        (a, fa), (b, fb) = rng.sample(pictures, 2)
        if fa["count"] == fb["count"]:
            answer = "They have the same number."
        else:
            answer = "The first." if fa["count"] > fb["count"] else "The second."
        out.append([user(image(a), image(b), text("Which picture has more shapes?")), assistant(answer)])
    return [{"messages": m} for m in out]


def write_split(out, split, count, rng):
    pictures = []
    for i in range(count):
        img, facts = picture(rng)
        rel = f"images/{split}_{i:03d}.png"
        # A palette image: the few colours of a drawing keep each file well under a kilobyte.
        img.convert("P", palette=Image.ADAPTIVE, colors=16).save(out / rel, optimize=True)
        pictures.append((rel, facts))
    records = conversations(rng, pictures)
    with open(out / f"{split}.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return len(records)


def main():
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "assets" / "tiny-vlm-data"
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    rng = random.Random(1234)
    n_train = write_split(out, "train", 40, rng)
    n_val = write_split(out, "validation", 12, rng)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {n_train} train and {n_val} validation conversations, {total // 1024} KiB")


if __name__ == "__main__":
    main()
