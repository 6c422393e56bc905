"""`automodel finetune llm` on a tiny Qwen3-MoE (written by transformers in the test, with the embedded tiny Llama's
tokenizer and output_router_logits on): the router's load-balancing loss is part of the training loss and logged as
aux_loss, the loss falls, and the consolidated checkpoint loads in transformers with no missing or unexpected key."""
import json
import os
import pathlib
import shutil
import subprocess

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build")) / "automodel"
RECIPE = ROOT / "examples" / "llm_finetune" / "tiny_llama_squad.yaml"
TINY_LLAMA = ROOT / "assets" / "tiny-llama"


def tiny_qwen3_moe(out_dir):
    llama = json.loads((TINY_LLAMA / "config.json").read_text())
    config = transformers.Qwen3MoeConfig(
        vocab_size=llama["vocab_size"], hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=8,
        num_experts_per_tok=2, norm_topk_prob=True, output_router_logits=True, router_aux_loss_coef=0.01,
        max_position_embeddings=512, bos_token_id=llama.get("bos_token_id"), eos_token_id=llama.get("eos_token_id"),
        pad_token_id=llama.get("pad_token_id"), tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(str(out_dir))
    for f in TINY_LLAMA.iterdir():
        if f.name.startswith("tokenizer") or f.suffix == ".jinja":
            shutil.copy(f, out_dir / f.name)
    return out_dir


FUSED = "nemo_automodel.components.loss.linear_ce.FusedLinearCrossEntropy"
LOSSES = {"masked": [], "fused_linear": ["--loss_fn._target_", FUSED]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """30 steps with the recipe's MaskedCrossEntropy and with FusedLinearCrossEntropy, from the same model."""
    root = tmp_path_factory.mktemp("moe")
    model = tiny_qwen3_moe(root / "model")
    out = {}
    for name, loss_args in LOSSES.items():
        ckpt = root / name
        r = subprocess.run(
            [str(BIN), "finetune", "llm", "-c", str(RECIPE), "--threads", "2", "--checkpoint.checkpoint_dir",
             str(ckpt), "--model.pretrained_model_name_or_path", str(model), "--step_scheduler.max_steps", "30",
             "--step_scheduler.val_every_steps", "100", "--step_scheduler.ckpt_every_steps", "30",
             "--step_scheduler.global_batch_size", "8", *loss_args],
            capture_output=True, text=True, timeout=900, cwd=ROOT)
        assert r.returncode == 0, r.stdout + r.stderr
        out[name] = [json.loads(line) for line in (ckpt / "training.jsonl").read_text().splitlines()]
    return model, root, out


@pytest.mark.parametrize("loss", list(LOSSES))
def test_moe_finetune_logs_aux_loss_and_loss_falls(runs, loss):
    train = runs[2][loss]
    assert [m["step"] for m in train] == list(range(30))
    aux = [m["aux_loss"] for m in train]
    # coef x num_experts x sum(fraction x probability): 0.01 x k (2) when perfectly balanced, more otherwise.
    assert all(0.015 < a < 0.2 for a in aux), aux
    assert all(m["loss"] > a for m, a in zip(train, aux))
    first = sum(m["loss"] for m in train[:5]) / 5
    last = sum(m["loss"] for m in train[-5:]) / 5
    assert last < 0.8 * first, (first, last)


def test_both_losses_give_the_same_first_step(runs):
    a, b = runs[2]["masked"][0], runs[2]["fused_linear"][0]
    assert abs(a["aux_loss"] - b["aux_loss"]) <= 1e-6 * a["aux_loss"]
    assert abs(a["loss"] - b["loss"]) <= 1e-5 * a["loss"]


def test_the_trained_model_loads_in_transformers(runs):
    model, root, _ = runs
    saved = root / "masked" / "epoch_0_step_29" / "model" / "consolidated"
    loaded, info = transformers.AutoModelForCausalLM.from_pretrained(str(saved), output_loading_info=True)
    assert not {k: v for k, v in info.items() if v}, info
    base = transformers.AutoModelForCausalLM.from_pretrained(str(model))
    experts = lambda m: m.model.layers[0].mlp.experts.gate_up_proj  # noqa: E731
    assert not torch.equal(experts(base), experts(loaded)), "the experts were trained"


MPI_ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_data_parallel_moe_training_matches_one_process(runs, strategy, tmp_path):
    """Two ranks with local batch 4 against one process with local batch 8 (the same global batches): the
    cross-entropy is the same, the load-balancing loss is each rank's own (as under transformers + DDP: its token
    statistics are the rank's batch's), so the losses agree up to the aux losses' difference (here ~1e-4 of it)."""
    model, root, _ = runs
    common = ["finetune", "llm", "-c", str(RECIPE), "--threads", "1", "--model.pretrained_model_name_or_path",
              str(model), "--step_scheduler.max_steps", "3", "--lr_scheduler.lr_warmup_steps", "1",
              "--step_scheduler.val_every_steps", "100",
              "--step_scheduler.ckpt_every_steps", "100", "--step_scheduler.global_batch_size", "8"]
    single = subprocess.run([str(BIN), *common, "--checkpoint.checkpoint_dir", str(tmp_path / "one"),
                             "--step_scheduler.local_batch_size", "8"], capture_output=True, text=True, timeout=600,
                            cwd=ROOT)
    assert single.returncode == 0, single.stdout + single.stderr
    dp = subprocess.run([str(BIN), *common, "--checkpoint.checkpoint_dir", str(tmp_path / "dp"),
                         "--step_scheduler.local_batch_size", "4", "--distributed.strategy", strategy,
                         "--nproc-per-node", "2"], capture_output=True, text=True, timeout=600, cwd=ROOT, env=MPI_ENV)
    assert dp.returncode == 0, dp.stdout + dp.stderr
    read = lambda d: [json.loads(line) for line in (d / "training.jsonl").read_text().splitlines()]  # noqa: E731
    for a, b in zip(read(tmp_path / "one"), read(tmp_path / "dp"), strict=True):
        assert abs(a["aux_loss"] - b["aux_loss"]) <= 1e-3 * a["aux_loss"], (a, b)
        assert abs(a["loss"] - b["loss"]) <= abs(a["aux_loss"] - b["aux_loss"]) + 1e-5 * a["loss"], (a, b)
        assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-3 * a["grad_norm"], (a, b)


def test_inspect_shows_total_and_active_parameters(runs):
    model = runs[0]
    r = subprocess.run([str(BIN), "inspect", str(model), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(model))
    total = sum(p.numel() for p in hf.parameters())
    experts = sum(p.numel() for n, p in hf.named_parameters() if ".experts." in n)
    assert info["num_parameters"] == total
    assert info["num_active_parameters"] == total - experts + experts * 2 // 8  # top-2 of 8 experts run per token
    assert (info["num_experts"], info["num_experts_per_tok"], info["moe_intermediate_size"]) == (8, 2, 32)
    text = subprocess.run([str(BIN), "inspect", str(model)], capture_output=True, text=True, timeout=120).stdout
    assert f"active per token {info['num_active_parameters']}" in text and "8 (top 2, moe_intermediate_size 32)" in text


PEFT_RECIPE = ROOT / "examples" / "llm_finetune" / "tiny_llama_squad_peft.yaml"


def test_lora_on_experts_trains_saves_for_peft_and_merges(runs, tmp_path):
    """peft.target_parameters in the recipe: adapters on the attention projections and on both grouped expert
    tensors train with the aux loss; the checkpoint's adapter loads in peft, and merge-lora's model in transformers
    gives peft's merge_and_unload logits."""
    import safetensors.torch

    peft = pytest.importorskip("peft")
    model = runs[0]
    ckpt = tmp_path / "ckpt"
    recipe = tmp_path / "recipe.yaml"
    text = PEFT_RECIPE.read_text()
    assert "  dropout: 0.0\n" in text
    experts = "  dropout: 0.0\n  target_parameters: [gate_up_proj, down_proj]\n"
    recipe.write_text(text.replace("  dropout: 0.0\n", experts))
    r = subprocess.run(
        [str(BIN), "finetune", "llm", "-c", str(recipe), "--threads", "2", "--checkpoint.checkpoint_dir",
         str(ckpt), "--model.pretrained_model_name_or_path", str(model), "--step_scheduler.max_steps", "10",
         "--lr_scheduler.lr_warmup_steps", "2", "--step_scheduler.val_every_steps", "100",
         "--step_scheduler.ckpt_every_steps", "10", "--step_scheduler.global_batch_size", "8"],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    train = [json.loads(line) for line in (ckpt / "training.jsonl").read_text().splitlines()]
    assert all("aux_loss" in m for m in train) and train[-1]["loss"] < train[0]["loss"]

    adapter = ckpt / "epoch_0_step_9" / "model"
    names = safetensors.torch.load_file(str(adapter / "adapter_model.safetensors")).keys()
    assert "base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight" in names
    assert "base_model.model.model.layers.0.mlp.experts.lora_B.weight" in names
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in names
    pm = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(str(model)), str(adapter))
    pm.eval()
    merged = tmp_path / "merged"
    r = subprocess.run([str(BIN), "merge-lora", "--base", str(model), "--adapter", str(adapter), "--out", str(merged)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ids = torch.tensor([[0, 17, 93, 45, 310, 7, 88, 501 % 512]])
    with torch.no_grad():
        theirs = pm.merge_and_unload()(input_ids=ids).logits
        ours = transformers.AutoModelForCausalLM.from_pretrained(str(merged))(input_ids=ids).logits
    assert float((ours - theirs).abs().max()) <= 1e-5 * float(theirs.abs().max())


def test_the_recipe_turns_the_router_loss_on_as_from_pretrained_kwargs_do(tmp_path):
    """Qwen3-30B-A3B's config.json has output_router_logits false: no aux loss, as in transformers, unless the model
    section sets it (transformers: from_pretrained(path, output_router_logits=True)); router_aux_loss_coef likewise.
    The checkpoint's config.json keeps what the run used."""
    model = tiny_qwen3_moe(tmp_path / "model")
    cfg = json.loads((model / "config.json").read_text())
    cfg["output_router_logits"] = False
    (model / "config.json").write_text(json.dumps(cfg))

    def train(name, *overrides):
        ckpt = tmp_path / name
        r = subprocess.run(
            [str(BIN), "finetune", "llm", "-c", str(RECIPE), "--threads", "2", "--checkpoint.checkpoint_dir",
             str(ckpt), "--model.pretrained_model_name_or_path", str(model), "--step_scheduler.max_steps", "2",
             "--lr_scheduler.lr_warmup_steps", "1", "--step_scheduler.val_every_steps", "100",
             "--step_scheduler.ckpt_every_steps", "2", "--step_scheduler.global_batch_size", "8", *overrides],
            capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert r.returncode == 0, r.stdout + r.stderr
        return ckpt, [json.loads(line) for line in (ckpt / "training.jsonl").read_text().splitlines()]

    _, off = train("off")
    assert all("aux_loss" not in m for m in off)
    ckpt, on = train("on", "--model.output_router_logits", "true")
    _, scaled = train("scaled", "--model.output_router_logits", "true", "--model.router_aux_loss_coef", "0.1")
    assert abs(scaled[0]["aux_loss"] - 10 * on[0]["aux_loss"]) <= 1e-6 * scaled[0]["aux_loss"]
    assert abs((on[0]["loss"] - on[0]["aux_loss"]) - off[0]["loss"]) <= 1e-5 * off[0]["loss"]
    saved = json.loads((ckpt / "epoch_0_step_1" / "model" / "consolidated" / "config.json").read_text())
    assert saved["output_router_logits"] is True


def tiny_gpt_oss(out_dir):
    """A tiny GPT-OSS (sinks, alternating sliding / full attention with a window below the sequence, YaRN, a router
    with a bias, clamped SwiGLU experts with biases) with the embedded tiny Llama's tokenizer."""
    llama = json.loads((TINY_LLAMA / "config.json").read_text())
    config = transformers.GptOssConfig(
        vocab_size=llama["vocab_size"], hidden_size=64, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=8, num_experts_per_tok=2,
        sliding_window=16, output_router_logits=True, router_aux_loss_coef=0.01, max_position_embeddings=512,
        rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, beta_fast=32.0, beta_slow=1.0,
                             original_max_position_embeddings=128, truncate=False),
        bos_token_id=llama.get("bos_token_id"), eos_token_id=llama.get("eos_token_id"),
        pad_token_id=llama.get("pad_token_id"), tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(str(out_dir))
    for f in TINY_LLAMA.iterdir():
        if f.name.startswith("tokenizer") or f.suffix == ".jinja":
            shutil.copy(f, out_dir / f.name)
    return out_dir


def test_gpt_oss_finetune_logs_aux_loss_loss_falls_and_loads_in_transformers(tmp_path):
    model = tiny_gpt_oss(tmp_path / "model")
    ckpt = tmp_path / "ckpt"
    r = subprocess.run(
        [str(BIN), "finetune", "llm", "-c", str(RECIPE), "--threads", "2", "--checkpoint.checkpoint_dir", str(ckpt),
         "--model.pretrained_model_name_or_path", str(model), "--step_scheduler.max_steps", "20",
         "--step_scheduler.val_every_steps", "100", "--step_scheduler.ckpt_every_steps", "20",
         "--step_scheduler.global_batch_size", "8"],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    train = [json.loads(line) for line in (ckpt / "training.jsonl").read_text().splitlines()]
    assert [m["step"] for m in train] == list(range(20))
    assert all(0.015 < m["aux_loss"] < 0.2 and m["loss"] > m["aux_loss"] for m in train), train
    first = sum(m["loss"] for m in train[:4]) / 4
    last = sum(m["loss"] for m in train[-4:]) / 4
    assert last < 0.8 * first, (first, last)
    saved = ckpt / "epoch_0_step_19" / "model" / "consolidated"
    loaded, info = transformers.AutoModelForCausalLM.from_pretrained(str(saved), output_loading_info=True)
    assert not {k: v for k, v in info.items() if v}, info
    base = transformers.AutoModelForCausalLM.from_pretrained(str(model))
    for part in (lambda m: m.model.layers[0].self_attn.sinks, lambda m: m.model.layers[0].mlp.experts.gate_up_proj):
        assert not torch.equal(part(base), part(loaded)), "sinks and experts were trained"


def test_mixtral_router_jitter_trains_and_recomputes_the_same_noise(tmp_path):
    """router_jitter_noise perturbs the MoE blocks' input in training steps (the losses differ from a run without
    it); activation checkpointing recomputes each layer with the same noise, so it trains as the run that keeps the
    activations."""
    llama = json.loads((TINY_LLAMA / "config.json").read_text())
    model = tmp_path / "model"
    config = transformers.MixtralConfig(
        vocab_size=llama["vocab_size"], hidden_size=64, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
        router_jitter_noise=0.2, max_position_embeddings=512, bos_token_id=llama.get("bos_token_id"),
        eos_token_id=llama.get("eos_token_id"), pad_token_id=llama.get("pad_token_id"))
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(str(model))
    for f in TINY_LLAMA.iterdir():
        if f.name.startswith("tokenizer") or f.suffix == ".jinja":
            shutil.copy(f, model / f.name)

    def train(name, *overrides, model=model):
        ckpt = tmp_path / name
        r = subprocess.run(
            [str(BIN), "finetune", "llm", "-c", str(RECIPE), "--threads", "2", "--checkpoint.enabled", "false",
             "--checkpoint.checkpoint_dir", str(ckpt), "--model.pretrained_model_name_or_path", str(model),
             "--step_scheduler.max_steps", "4", "--lr_scheduler.lr_warmup_steps", "1", "--step_scheduler.val_every_steps", "100",
             "--step_scheduler.global_batch_size", "8", *overrides],
            capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "router_jitter_noise" not in r.stderr
        return [json.loads(line) for line in (ckpt / "training.jsonl").read_text().splitlines()]

    jittered = train("jitter")
    checkpointed = train("ac", "--distributed.activation_checkpointing", "true")
    for x, y in zip(jittered, checkpointed, strict=True):
        assert abs(x["loss"] - y["loss"]) <= 1e-6 * x["loss"], (x, y)
        assert abs(x["grad_norm"] - y["grad_norm"]) <= 1e-5 * x["grad_norm"], (x, y)
    unjittered = shutil.copytree(model, tmp_path / "unjittered")
    cfg = json.loads((unjittered / "config.json").read_text())
    (unjittered / "config.json").write_text(json.dumps(dict(cfg, router_jitter_noise=0.0)))
    assert train("plain", model=unjittered)[0]["loss"] != jittered[0]["loss"]
