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
