"""`automodel finetune vlm` on the embedded tiny SmolVLM (examples/vlm_finetune/tiny_smolvlm.yaml): the validation loss
falls while freeze_config keeps the vision tower and embeddings as loaded, the consolidated checkpoint loads in
transformers (SmolVLMForConditionalGeneration) with the log-probabilities automodel computes, fsdp2 on 2 ranks cuts it
per decoder layer and trains as one process, and a LoRA adapter loads in peft."""
import functools
import json
import pathlib
import subprocess

import numpy as np
import pytest

import vlm_runs
from vlm_runs import BIN, ROOT, jsonl, logprobs_match

RECIPE = ROOT / "examples" / "vlm_finetune" / "tiny_smolvlm.yaml"
VLM = ROOT / "assets" / "tiny-smolvlm"
finetune = functools.partial(vlm_runs.finetune, RECIPE)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("smolvlm")
    r = finetune(d)
    assert r.returncode == 0, r.stdout + r.stderr
    return d


def final(d):
    return sorted(pathlib.Path(d).glob("epoch_*_step_29"))[0] / "model" / "consolidated"


def test_validation_loss_falls_and_only_the_unfrozen_parts_train(run):
    val = [x["val_loss"] for x in jsonl(run / "validation.jsonl")]
    assert len(val) >= 3 and val[-1] < val[0] - 0.1, val
    from safetensors.numpy import load_file
    before, after = load_file(str(VLM / "model.safetensors")), load_file(str(final(run) / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert not any(k.startswith("model.vision_model.") or "embed_tokens" in k for k in changed), sorted(changed)[:5]
    assert "model.connector.modality_projection.proj.weight" in changed
    assert any(k.startswith("model.text_model.layers.") for k in changed)


def test_the_consolidated_checkpoint_gives_transformers_the_same_logprobs(run, tmp_path):
    import torch
    from transformers import SmolVLMForConditionalGeneration
    model = SmolVLMForConditionalGeneration.from_pretrained(str(final(run)), dtype=torch.float32).eval()
    inputs = logprobs_match(final(run), lambda ids, pixels, _: model(input_ids=ids, pixel_values=pixels[None]).logits,
                            tmp_path)
    assert inputs["rows"] == [2]


def test_fsdp2_on_two_ranks_trains_as_one_process(run, tmp_path):
    """Cut per decoder layer (language_model.model.layers.N) like Gemma 3's: the connector, the two layers and the
    final norm with the LM head are the sharded buffers."""
    d = tmp_path / "fsdp2"
    r = finetune(d, "--step_scheduler.local_batch_size", 2, "--step_scheduler.max_steps", 6,
                 "--distributed.strategy", "fsdp2", ranks=2)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "data parallel (fsdp2): 2 ranks, 4 sharded buffers" in r.stdout, r.stdout
    for x, y in zip(jsonl(run / "training.jsonl")[:6], jsonl(d / "training.jsonl"), strict=True):
        assert x["num_label_tokens"] == y["num_label_tokens"]
        assert abs(x["loss"] - y["loss"]) <= 1e-5 * abs(x["loss"]), (x, y)


def test_lora_adapter_loads_in_peft(tmp_path):
    """LoRA on the decoder, its exclude patterns written against transformers' module paths as a NeMo recipe writes
    them (model.vision_model, model.connector): the adapter is named by those paths (model.text_model.*), so peft
    attaches every tensor to SmolVLMForConditionalGeneration."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import SmolVLMForConditionalGeneration
    d = tmp_path / "lora"
    r = finetune(d, "--peft._target_", "nemo_automodel.components._peft.lora.PeftConfig", "--peft.match_all_linear",
                 "false", "--peft.exclude_modules", '["*vision_model*", "*connector*", "*lm_head*"]', "--peft.dim", 8,
                 "--peft.alpha", 32, "--step_scheduler.max_steps", 4, "--step_scheduler.ckpt_every_steps", 4,
                 "--lr_scheduler.lr_warmup_steps", 2)
    assert r.returncode == 0, r.stdout + r.stderr
    adapter = next(d.glob("epoch_*_step_3")) / "model"
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    assert saved and all(k.startswith("base_model.model.model.text_model.layers.") for k in saved), list(saved)[:3]
    base = SmolVLMForConditionalGeneration.from_pretrained(str(VLM), dtype=torch.float32)
    attached = {k.replace(".default", ""): v for k, v in PeftModel.from_pretrained(base, str(adapter)).state_dict().items()
                if "lora_" in k}
    assert attached.keys() == saved.keys() and all(torch.equal(attached[k], saved[k]) for k in saved)


def test_inspect_and_generate_with_a_conversation(tmp_path):
    """inspect describes the tower and its tiles; generate --messages (apply_chat_template with the image cut into
    tiles) gives transformers' greedy tokens."""
    import torch
    from transformers import SmolVLMForConditionalGeneration
    r = subprocess.run([str(BIN), "inspect", str(VLM), "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["model_type"] == "smolvlm" and info["text_model_type"] == "llama"
    assert info["vision"]["mm_tokens_per_image"] == 4 and info["vision"]["scale_factor"] == 2
    image = ROOT / "assets" / "tiny-vlm-data" / "images" / "train_000.png"
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"role": "user", "content": [{"type": "image", "image": str(image)},
                                                             {"type": "text", "text": "Describe this image."}]}]))
    r = subprocess.run([str(BIN), "generate", "--model", str(VLM), "--messages", str(chat), "--max-new-tokens", "12"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ours = json.loads(r.stdout)
    pre = subprocess.run([str(BIN), "preprocess", "--model", str(VLM), "--messages", str(chat),
                          "--add-generation-prompt", "--out", str(tmp_path / "pixels.npy")],
                         capture_output=True, text=True, timeout=300)
    assert pre.returncode == 0, pre.stderr
    inputs = json.loads(pre.stdout)
    model = SmolVLMForConditionalGeneration.from_pretrained(str(VLM), dtype=torch.float32).eval()
    out = model.generate(input_ids=torch.tensor([inputs["input_ids"]]),
                         pixel_values=torch.from_numpy(np.load(tmp_path / "pixels.npy"))[None], max_new_tokens=12,
                         do_sample=False)
    expected = out[0, len(inputs["input_ids"]):].tolist()
    assert ours["ids"] == expected[:len(ours["ids"])] and len(ours["ids"]) >= 1
