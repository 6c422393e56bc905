"""The automodel binary on the embedded tiny Gemma 3 image-text model (assets/tiny-gemma3-vlm)."""
import json
import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"
VLM = ROOT / "assets" / "tiny-gemma3-vlm"


def run(*args):
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=600)


def test_inspect_describes_the_text_decoder_and_the_vision_tower():
    r = run("inspect", str(VLM), "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    cfg = json.loads((VLM / "config.json").read_text())
    assert j["model_type"] == "gemma3" and j["text_model_type"] == "gemma3_text"
    assert j["architecture"] == "Gemma3ForConditionalGeneration"
    assert j["vision"]["image_size"] == cfg["vision_config"]["image_size"]
    assert j["vision"]["mm_tokens_per_image"] == cfg["mm_tokens_per_image"]
    assert j["vision"]["image_token_id"] == cfg["image_token_index"]
    assert j["sliding_windows"] == [cfg["text_config"]["sliding_window"], 0]
    assert j["num_parameters"] > 0
    r = run("inspect", str(VLM))
    assert r.returncode == 0 and "vision tower" in r.stdout and "16 tokens per image" in r.stdout


def test_a_causal_lm_command_on_it_is_a_clear_error():
    r = run("generate", "--model", str(VLM), "--prompt-ids", "2,4", "--max-new-tokens", "2")
    assert r.returncode == 1
    assert "model_type 'gemma3' is an image-text-to-text model, not a causal LM" in r.stderr
    assert "config.json" in r.stderr


def test_generate_and_logprobs_take_a_conversation_with_images(tmp_path):
    """--messages: the conversation rendered and tokenized as processor.apply_chat_template does, its images decoded;
    greedy generation gives transformers' tokens. On a causal LM --messages is a clear error."""
    import numpy as np
    import torch
    from transformers import Gemma3ForConditionalGeneration
    image = ROOT / "assets" / "tiny-vlm-data" / "images" / "train_000.png"
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"role": "user", "content": [{"type": "image", "image": str(image)},
                                                             {"type": "text", "text": "Describe this image."}]}]))
    r = run("generate", "--model", str(VLM), "--messages", str(chat), "--max-new-tokens", "8")
    assert r.returncode == 0, r.stderr
    ours = json.loads(r.stdout)
    pre = run("preprocess", "--model", str(VLM), "--messages", str(chat), "--add-generation-prompt", "--out",
              str(tmp_path / "pixels.npy"))
    assert pre.returncode == 0, pre.stderr
    inputs = json.loads(pre.stdout)
    model = Gemma3ForConditionalGeneration.from_pretrained(str(VLM), dtype=torch.float32).eval()
    out = model.generate(input_ids=torch.tensor([inputs["input_ids"]]),
                         pixel_values=torch.from_numpy(np.load(tmp_path / "pixels.npy")),
                         token_type_ids=torch.tensor([inputs["token_type_ids"]]), max_new_tokens=8, do_sample=False)
    expected = out[0, len(inputs["input_ids"]):].tolist()
    assert ours["ids"] == expected[:len(ours["ids"])] and len(ours["ids"]) >= 1
    r = run("logprobs", "--model", str(VLM), "--messages", str(chat))
    assert r.returncode == 0, r.stderr
    scored = json.loads(r.stdout)  # the conversation as it is: no generation prompt
    assert scored["tokens"] == inputs["input_ids"][:len(scored["tokens"])]
    assert len(scored["logprobs"]) == len(scored["tokens"]) - 1
    r = run("generate", "--model", str(ROOT / "assets" / "tiny-llama"), "--messages", str(chat))
    assert r.returncode == 1 and "--messages is for image-text models" in r.stderr, r.stderr
