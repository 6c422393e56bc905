"""What the image-text e2e tests share: `automodel finetune vlm` on a recipe, the training logs, and our
`logprobs --messages` on a validation conversation against a reference model's."""
import json
import os
import pathlib
import subprocess

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"
DATA = ROOT / "assets" / "tiny-vlm-data"
MPI_ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def finetune(recipe, ckpt_dir, *overrides, ranks=1):
    cmd = [str(BIN), "finetune", "vlm", "-c", str(recipe), "--checkpoint.checkpoint_dir", str(ckpt_dir),
           *map(str, overrides)]
    if ranks > 1:
        cmd += ["--nproc-per-node", str(ranks)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=MPI_ENV)


def jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def logprobs_match(model_dir, reference_logits, tmp_path):
    """`automodel logprobs --messages` on the first validation conversation against reference_logits(ids, pixel_values,
    inputs) (a transformers or peft model given the same inputs: `automodel preprocess`'s, whose pixel values equal
    transformers' processor's): every log-probability within 1e-5. Returns preprocess's JSON."""
    import torch
    record = json.loads((DATA / "validation.jsonl").read_text().splitlines()[0])
    for m in record["messages"]:
        for part in m["content"] if isinstance(m["content"], list) else []:
            if part.get("type") == "image":
                part["image"] = str(DATA / part["image"])
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps(record["messages"]))
    ours = subprocess.run([str(BIN), "logprobs", "--model", str(model_dir), "--messages", str(chat)],
                          capture_output=True, text=True, timeout=300)
    assert ours.returncode == 0, ours.stderr
    ours = json.loads(ours.stdout)
    pre = subprocess.run([str(BIN), "preprocess", "--model", str(model_dir), "--messages", str(chat), "--out",
                          str(tmp_path / "pixels.npy")], capture_output=True, text=True, timeout=300)
    assert pre.returncode == 0, pre.stderr
    inputs = json.loads(pre.stdout)
    assert inputs["input_ids"] == ours["tokens"]
    ids = torch.tensor([inputs["input_ids"]])
    with torch.no_grad():
        logits = reference_logits(ids, torch.from_numpy(np.load(tmp_path / "pixels.npy")), inputs)
    ref = torch.log_softmax(logits.double()[0, :-1], -1).gather(1, ids[0, 1:, None])[:, 0]
    assert np.max(np.abs(np.array(ours["logprobs"]) - ref.numpy())) <= 1e-5
    return inputs
