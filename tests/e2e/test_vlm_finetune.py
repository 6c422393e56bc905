"""`automodel finetune vlm` on the embedded tiny Gemma 3 image-text model and data (examples/vlm_finetune): it
trains what freeze_config leaves trainable, its validation loss falls, the consolidated checkpoint loads in
transformers with the log-probabilities automodel computes, and it resumes as the uninterrupted run continues."""
import functools
import pathlib
import subprocess

import numpy as np
import pytest

import vlm_runs
from vlm_runs import BIN, ROOT, jsonl, logprobs_match

RECIPE = ROOT / "examples" / "vlm_finetune" / "tiny_gemma3.yaml"
VLM = ROOT / "assets" / "tiny-gemma3-vlm"
finetune = functools.partial(vlm_runs.finetune, RECIPE)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("vlm")
    r = finetune(d)
    assert r.returncode == 0, r.stdout + r.stderr
    return d


def final(d):
    return sorted(pathlib.Path(d).glob("epoch_*_step_29"))[0] / "model" / "consolidated"


def test_validation_loss_falls_and_only_the_unfrozen_parts_train(run):
    val = [x["val_loss"] for x in jsonl(run / "validation.jsonl")]
    assert len(val) >= 3 and val[-1] < val[0] - 0.2, val
    from safetensors.numpy import load_file
    before, after = load_file(str(VLM / "model.safetensors")), load_file(str(final(run) / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    # NeMo's freeze_config: embeddings (the tied LM head) and the vision tower as loaded; projector and layers train.
    assert not any(k.startswith("vision_tower.") or "embed_tokens" in k for k in changed), sorted(changed)[:5]
    assert any(k.startswith("multi_modal_projector.") for k in changed)
    assert any(k.startswith("language_model.model.layers.") for k in changed)


def gemma3_logits(model):
    """Gemma 3's forward on preprocess's inputs (their token_type_ids mark the image tokens)."""
    import torch
    return lambda ids, pixels, inputs: model(input_ids=ids, pixel_values=pixels,
                                             token_type_ids=torch.tensor([inputs["token_type_ids"]])).logits


def test_the_consolidated_checkpoint_gives_transformers_the_same_logprobs(run, tmp_path):
    import torch
    from transformers import Gemma3ForConditionalGeneration
    model = Gemma3ForConditionalGeneration.from_pretrained(str(final(run)), dtype=torch.float32).eval()
    logprobs_match(final(run), gemma3_logits(model), tmp_path)


def test_resume_continues_as_the_uninterrupted_run(run, tmp_path):
    # The older of the two checkpoints kept (max_recent_checkpoints: 2): on an epoch's last step, so the resumed
    # run starts the next epoch (it once found its loader at the end of the old one and stopped after 0 steps).
    step = min(int(p.name.rsplit("_", 1)[1]) for p in run.glob("epoch_*_step_*"))
    d = tmp_path / "resumed"
    r = finetune(d, "--checkpoint.restore_from", next(run.glob(f"epoch_*_step_{step}")))
    assert r.returncode == 0, r.stdout + r.stderr
    strip = lambda rows: [{k: x[k] for k in ("step", "loss", "grad_norm", "lr")} for x in rows]  # noqa: E731
    assert strip(jsonl(d / "training.jsonl")) == strip(jsonl(run / "training.jsonl"))[step + 1:]


def test_activation_checkpointing_trains_as_without(run, tmp_path):
    """The decoder layers recomputed in backward (image blocks and bidirectional masks included) give the losses and
    gradient norms of the run that keeps their activations."""
    d = tmp_path / "ac"
    r = finetune(d, "--distributed.activation_checkpointing", "true", "--checkpoint.enabled", "false")
    assert r.returncode == 0, r.stdout + r.stderr
    for x, y in zip(jsonl(run / "training.jsonl"), jsonl(d / "training.jsonl"), strict=True):
        assert abs(x["loss"] - y["loss"]) <= 1e-6 * abs(x["loss"]), (x, y)
        assert abs(x["grad_norm"] - y["grad_norm"]) <= 1e-5 * abs(x["grad_norm"]), (x, y)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_ranks_train_as_one_process(run, tmp_path, strategy):
    """fsdp2 cuts the image-text model per decoder layer (language_model.model.layers.N) like a causal LM; ddp
    reduces the final norm early and the projector (used before the decoder, registered before it as in
    transformers) after backward."""
    d = tmp_path / strategy
    r = finetune(d, "--step_scheduler.local_batch_size", 2, "--step_scheduler.max_steps", 6,
                 "--distributed.strategy", strategy, ranks=2)
    assert r.returncode == 0, r.stdout + r.stderr
    if strategy == "fsdp2":  # the projector, the two decoder layers, the final norm
        assert "data parallel (fsdp2): 2 ranks, 4 sharded buffers" in r.stdout, r.stdout
    for x, y in zip(jsonl(run / "training.jsonl")[:6], jsonl(d / "training.jsonl"), strict=True):
        assert x["num_label_tokens"] == y["num_label_tokens"]
        assert abs(x["loss"] - y["loss"]) <= 1e-5 * abs(x["loss"]), (x, y)


def test_lora_adapter_loads_in_peft_and_resumes(tmp_path):
    """LoRA on the decoder (NeMo's exclude_modules for VLMs): the adapter is named by transformers' module paths
    (model.language_model.*), so peft attaches every tensor to Gemma3ForConditionalGeneration; a resumed run reads it
    back and continues as the uninterrupted one."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import Gemma3ForConditionalGeneration
    lora = ["--peft._target_", "nemo_automodel.components._peft.lora.PeftConfig", "--peft.match_all_linear", "false",
            "--peft.exclude_modules", '["*vision_tower*", "*lm_head*"]', "--peft.dim", 8, "--peft.alpha", 32,
            "--step_scheduler.max_steps", 8, "--step_scheduler.ckpt_every_steps", 4, "--lr_scheduler.lr_warmup_steps",
            2]
    d = tmp_path / "lora"
    r = finetune(d, *lora, "--checkpoint.max_recent_checkpoints", 5)
    assert r.returncode == 0, r.stdout + r.stderr
    adapter = next(d.glob("epoch_*_step_7")) / "model"
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    assert all(k.startswith("base_model.model.model.language_model.layers.") for k in saved), list(saved)[:3]
    base = Gemma3ForConditionalGeneration.from_pretrained(str(VLM), dtype=torch.float32)
    attached = {k.replace(".default", ""): v for k, v in PeftModel.from_pretrained(base, str(adapter)).state_dict().items()
                if "lora_" in k}
    assert attached.keys() == saved.keys() and all(torch.equal(attached[k], saved[k]) for k in saved)
    resumed = tmp_path / "resumed"
    r = finetune(resumed, *lora, "--checkpoint.restore_from", next(d.glob("epoch_*_step_3")))
    assert r.returncode == 0, r.stdout + r.stderr
    strip = lambda rows: [{k: x[k] for k in ("step", "loss", "grad_norm")} for x in rows]  # noqa: E731
    assert strip(jsonl(resumed / "training.jsonl")) == strip(jsonl(d / "training.jsonl"))[4:]


def test_lora_on_the_vision_tower_equals_peft(tmp_path):
    """LoRA on every linear but the LM head, SigLIP's included (fc1/fc2/out_proj as peft names them): the tower's
    adapters train through the frozen tower, peft attaches every tensor, the peft model gives our merged model's
    log-probabilities, and merge-lora's weights are peft's merge_and_unload's."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import Gemma3ForConditionalGeneration
    d = tmp_path / "lora"
    r = finetune(d, "--peft._target_", "nemo_automodel.components._peft.lora.PeftConfig", "--peft.match_all_linear",
                 "false", "--peft.exclude_modules", '["*lm_head*"]', "--peft.dim", 8, "--peft.alpha", 32,
                 "--step_scheduler.max_steps", 6, "--step_scheduler.ckpt_every_steps", 6)
    assert r.returncode == 0, r.stdout + r.stderr
    adapter = next(d.glob("epoch_*_step_5")) / "model"
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    tower = {k: v for k, v in saved.items() if k.startswith("base_model.model.model.vision_tower.")}
    assert {k.split(".")[-3] for k in tower} == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    assert all(v.abs().max() > 0 for k, v in tower.items() if "lora_B" in k), "the tower's adapters trained"
    base = Gemma3ForConditionalGeneration.from_pretrained(str(VLM), dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, str(adapter)).eval()
    attached = {k.replace(".default", ""): v for k, v in peft_model.state_dict().items() if "lora_" in k}
    assert attached.keys() == saved.keys() and all(torch.equal(attached[k], saved[k]) for k in saved)
    merged = tmp_path / "merged"
    r = subprocess.run([str(BIN), "merge-lora", "--base", str(VLM), "--adapter", str(adapter), "--out", str(merged)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    logprobs_match(merged, gemma3_logits(peft_model), tmp_path)
    ours = Gemma3ForConditionalGeneration.from_pretrained(str(merged), dtype=torch.float32).state_dict()
    for name, ref in peft_model.merge_and_unload().state_dict().items():
        assert (ours[name] - ref).abs().max() <= 1e-6 * max(1.0, ref.abs().max().item()), name


@pytest.mark.parametrize("overrides,message", [
    (["--model._target_", "nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained"],
     "holds an image-text model but model._target_ loads a causal LM"),
    (["--packed_sequence.packed_sequence_size", 256], "packed_sequence is not supported for image-text models"),
    (["--dataset._target_", "nemo_automodel.components.datasets.llm.squad.make_squad_dataset",
      "--dataset.dataset_name", "assets/tiny-squad"], "an image-text model needs a vision-language dataset"),
])
def test_bad_image_text_recipes_are_errors(tmp_path, overrides, message):
    r = finetune(tmp_path, *overrides)
    assert r.returncode == 1 and message in r.stderr, r.stderr


def test_image_data_or_freeze_config_on_a_causal_lm_are_errors(tmp_path):
    llm = ["--model._target_", "nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained",
           "--model.pretrained_model_name_or_path", "assets/tiny-llama", "--processor.pretrained_model_name_or_path",
           "assets/tiny-gemma3-vlm"]
    r = finetune(tmp_path / "a", *llm)
    assert r.returncode == 1 and "freeze_config applies to image-text models" in r.stderr, r.stderr
    unfrozen = tmp_path / "recipe.yaml"
    unfrozen.write_text(RECIPE.read_text().split("\nfreeze_config:")[0])
    r = subprocess.run([str(BIN), "finetune", "llm", "-c", str(unfrozen), "--checkpoint.checkpoint_dir",
                        str(tmp_path / "b"), *llm], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 1 and "the dataset holds images but the model is a causal LM" in r.stderr, r.stderr
