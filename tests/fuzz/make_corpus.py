"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/) and dictionaries (tests/fuzz/<target>.dict)
from the repository's test inputs and from small files made by the reference libraries (safetensors, transformers'
config classes, tokenizers, peft). Deterministic; run from the repository root with the test venv:
    .venv/bin/python tests/fuzz/make_corpus.py
The outputs are committed, so fuzzing needs no Python."""
import gzip
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
from safetensors.numpy import save as save_safetensors

ROOT = pathlib.Path(__file__).resolve().parents[2]
FUZZ = ROOT / "tests" / "fuzz"
CORPUS = FUZZ / "corpus"
TINY = ROOT / "assets" / "tiny-llama"


def put(target, name, content):
    path = CORPUS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


def dump(value):
    return json.dumps(value, indent=2)


def safetensors_seeds():
    put("safetensors", "f32_bf16_i64.safetensors", save_safetensors({
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.arange(4, dtype=np.int64),
        "c": np.array([True, False]),
    }, metadata={"format": "pt"}))
    put("safetensors", "small_ints.safetensors", save_safetensors({
        "u8": np.arange(5, dtype=np.uint8), "i16": np.arange(3, dtype=np.int16),
        "u32": np.arange(2, dtype=np.uint32), "f16": np.ones(3, dtype=np.float16),
        "f64": np.ones((1, 2), dtype=np.float64), "scalar": np.array(1.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32)}))
    # bf16 and the 8-bit floats have no numpy dtype: written by hand (header, then little-endian data).
    header = {"__metadata__": {"format": "pt", "note": "hand-made"},
              "w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
              "e": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [8, 12]}}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    put("safetensors", "bf16_f8.safetensors",
        len(text).to_bytes(8, "little") + text + bytes([0x80, 0x3f, 0, 0x40, 0x40, 0x40, 0x80, 0xbf]) + b"\x01\x02\x03\x04")


def model_config_seeds():
    shutil.copy(TINY / "config.json", CORPUS / "model_config" / "tiny_llama.json")
    from transformers import AutoConfig
    small = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, max_position_embeddings=64)
    variants = {
        "mistral": dict(sliding_window=16),
        "qwen2": dict(use_sliding_window=True, sliding_window=8, max_window_layers=1),
        "qwen3": dict(head_dim=8),
        "gemma": dict(head_dim=8),
        "gemma2": dict(head_dim=8, sliding_window=8, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                       query_pre_attn_scalar=8),
        "gemma3_text": dict(head_dim=8, sliding_window=8, layer_types=["sliding_attention", "full_attention"],
                            rope_scaling={"rope_type": "linear", "factor": 8.0}),
        "phi3": dict(rope_scaling={"type": "longrope", "short_factor": [1.0] * 2, "long_factor": [2.0] * 2},
                     original_max_position_embeddings=32, partial_rotary_factor=0.5),
        "llama": dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
    }
    for model_type, extra in variants.items():
        config = AutoConfig.for_model(model_type, **small, **extra)
        put("model_config", f"{model_type}.json", config.to_json_string())
    shutil.copy(ROOT / "assets" / "tiny-gemma3-vlm" / "config.json", CORPUS / "model_config" / "tiny_gemma3_vlm.json")
    shutil.copy(ROOT / "assets" / "tiny-smolvlm" / "config.json", CORPUS / "model_config" / "tiny_smolvlm.json")
    put("model_config", "yarn.json", dump({**small, "model_type": "qwen2", "rope_scaling": {
        "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 32, "beta_slow": 1},
        "eos_token_id": [1, 2], "torch_dtype": "bfloat16"}))


def tokenizer_seeds():
    shutil.copy(TINY / "tokenizer.json", CORPUS / "tokenizer" / "tiny_llama.json")
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    text = ["Hello world, this is a tiny corpus.", "Ünïcödé and 東京 and numbers 12345", "tabs\tand\nnewlines"] * 3
    # SentencePiece-style: Metaspace pre-tokenizer, byte fallback, NFKC, a template post-processor.
    sp = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    sp.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" ", "\u2581")])
    sp.pre_tokenizer = pre_tokenizers.Metaspace()
    sp.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    sp.train_from_iterator(text, trainers.BpeTrainer(vocab_size=80, special_tokens=["<unk>", "<s>", "</s>"]))
    sp.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A </s> $B",
                                                      special_tokens=[("<s>", 1), ("</s>", 2)])
    put("tokenizer", "sentencepiece_bpe.json", sp.to_str())
    # GPT-2 style byte-level BPE with a split regex and added tokens.
    bl = Tokenizer(models.BPE())
    bl.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(r"\p{N}{1,3}", "isolated"),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False)])
    bl.decoder = decoders.ByteLevel()
    bl.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                     special_tokens=["<|endoftext|>"]))
    bl.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    bl.post_processor = processors.ByteLevel(trim_offsets=False)
    put("tokenizer", "byte_level_bpe.json", bl.to_str())


def tokenizer_config_seeds():
    shutil.copy(TINY / "tokenizer_config.json", CORPUS / "tokenizer_config" / "tiny_llama.json")
    template = (TINY / "chat_template.jinja").read_text()
    put("tokenizer_config", "chat_template_string.json", dump({
        "bos_token": {"content": "<|begin_of_text|>", "lstrip": False, "normalized": False, "rstrip": False,
                      "single_word": False, "__type": "AddedToken"},
        "eos_token": "<|end_of_text|>", "add_bos_token": True, "add_eos_token": False, "model_max_length": 2048,
        "chat_template": template}))
    put("tokenizer_config", "chat_template_list.json", dump({
        "eos_token": "<|end_of_text|>", "pad_token": None, "unk_token": "<unk>",
        "chat_template": [{"name": "default", "template": template},
                          {"name": "tool_use", "template": "{{ tools | tojson }}" + template}],
        "added_tokens_decoder": {"0": {"content": "<|begin_of_text|>", "special": True}}}))


def chat_template_seeds():
    for path in sorted((ROOT / "tests" / "oracle" / "chat_templates").glob("*.jinja")):
        shutil.copy(path, CORPUS / "chat_template" / path.name)
    shutil.copy(TINY / "chat_template.jinja", CORPUS / "chat_template" / "tiny_llama.jinja")
    # One seed per construct of the oracle's cases (macros, call blocks, namespaces, filters, loops...): real chat
    # templates use few of them, and a construct absent from the seeds is rarely reached by mutation alone.
    sys.path.insert(0, str(ROOT / "tests" / "oracle"))
    from chat_template_cases import CASES
    for name, template in CASES:
        put("chat_template", f"case_{name}.jinja", template)


def recipe_yaml_seeds():
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        shutil.copy(path, CORPUS / "recipe_yaml" / path.name)
    put("recipe_yaml", "anchors_merges_env.yaml", """\
base: &base
  lr: 1.0e-4
  betas: [0.9, 0.999]
optimizer:
  <<: *base
  _target_: torch.optim.AdamW
  weight_decay: ${AM_FUZZ_UNSET,0.01}
dataloader:
  _target_: torchdata.stateful_dataloader.StatefulDataLoader
  collate_fn: {_target_: nemo_automodel.components.datasets.utils.default_collater, pad_seq_len_divisible: 8}
  shuffle: off
peft:
  _target_: nemo_automodel.components._peft.lora.PeftConfig
  target_modules: ['*.q_proj', "*.v_proj"]
  dim: 0x10
  alpha: 32
  dropout: .05
  lora_dtype: torch.bfloat16
loss_fn:
  _target_: nemo_automodel.components.loss.chunked_ce.ChunkedCrossEntropy
  chunk_len: 1_024
text: |
  a block
  scalar
quoted: "{'a': [1, (2, 3)], 'b': None}"
times: 1:30
nothing: ~
""")
    put("recipe_yaml", "flow_and_tags.yaml", "{a: [1, 2.5, -.inf, .nan, 'x', !!str 3], ? b : c, d: &d {e: *d0}}\n"
        .replace("*d0", "f"))


def dataset_seeds():
    # Two selector bytes lead each input: format (bit 0: .jsonl; bits 1-2: gzip / zstd) and builder/options (see
    # dataset_fuzz.cpp).
    squad = (ROOT / "assets" / "tiny-squad" / "validation.jsonl").read_text().splitlines()[:3]
    squad_text = ("\n".join(squad) + "\n").encode()
    put("dataset", "squad.jsonl", b"\x01\x00" + squad_text)
    put("dataset", "squad.jsonl.gz", b"\x03\x00" + gzip.compress(squad_text, mtime=0))
    zstd = subprocess.run(["zstd", "-q", "-c", "-3"], input=squad_text, capture_output=True, check=True).stdout
    put("dataset", "squad.jsonl.zst", b"\x05\x00" + zstd)
    put("dataset", "squad_padded.json", b"\x00\x70" + json.dumps([json.loads(x) for x in squad[:2]]).encode())
    chat = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello!"}]},
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
                          {"role": "assistant", "content": None, "tool_calls": [
                              {"function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                          {"role": "tool", "content": "21 C", "tool_call_id": "call_0"},
                          {"role": "assistant", "content": "21 C in Paris."}],
             "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]}]
    put("dataset", "chat_openai.jsonl", b"\x01\x01" + "".join(json.dumps(r) + "\n" for r in chat).encode())
    sharegpt = [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                                   {"from": "gpt", "value": "Hello!"}, {"from": "human", "value": "Bye"},
                                   {"from": "gpt", "value": "Bye!"}]}]
    put("dataset", "chat_sharegpt.json", b"\x00\x02" + json.dumps({"data": sharegpt}).encode())
    columns = [{"context": "Paris is in France.", "question": "Where is Paris?", "answer": "France"},
               {"question": "2+2?", "answer": "4"}]
    put("dataset", "column_mapped.jsonl", b"\x01\x13" + "".join(json.dumps(r) + "\n" for r in columns).encode())
    hellaswag = [{"ctx": "A man sits down.", "endings": ["He stands.", "He eats.", "He sleeps.", "He runs."],
                  "label": "1"}, {"ctx": "It rains.", "endings": ["Wet.", "Dry."], "label": 0}]
    put("dataset", "hellaswag.json", b"\x00\x24" + json.dumps(hellaswag).encode())
    put("dataset", "records_split.jsonl", b"\x01\x05" + "".join(json.dumps({"i": i}) + "\n" for i in range(6)).encode())


def adapter_config_seeds():
    from peft import LoraConfig
    configs = {
        "peft_default.json": LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
        "patterns.json": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_rslora=True,
                                    rank_pattern={"layers.0.self_attn.q_proj": 8},
                                    alpha_pattern={"v_proj": 32}, task_type="CAUSAL_LM"),
    }
    for name, config in configs.items():
        d = config.to_dict()
        d = {k: (sorted(v) if isinstance(v, set) else v) for k, v in d.items()}
        d["peft_type"] = "LORA"
        d["task_type"] = "CAUSAL_LM"
        put("adapter_config", name, json.dumps(d, indent=2, sort_keys=True, default=str))


def checkpoint_state_seeds():
    # First byte: the file (see checkpoint_state_fuzz.cpp).
    put("checkpoint_state", "step_scheduler.json", b"\x00" + dump({"step": 3, "epoch": 0}).encode())
    put("checkpoint_state", "dataloader.json", b"\x01" + dump({
        "epoch": 0, "batches_yielded": 3, "seed": 42, "shuffle": True, "drop_last": False, "num_samples": 37,
        "batch_size": 4}).encode())
    put("checkpoint_state", "rng_state.json", b"\x02" + dump({"default": {"seed": 1111, "offset": 96},
                                                              "dropout": {"seed": 7, "offset": 0}}).encode())
    put("checkpoint_state", "optimizer.json", b"\x03" + dump({"step_counts": {"w": 4, "b": 4},
                                                              "extra": {"lr_scheduler_num_steps": 4}}).encode())
    state = {"w.exp_avg": np.zeros((4, 4), np.float32), "w.exp_avg_sq": np.zeros((4, 4), np.float32),
             "b.exp_avg": np.zeros(4, np.float32), "b.exp_avg_sq": np.zeros(4, np.float32)}
    put("checkpoint_state", "optimizer.safetensors", b"\x04" + save_safetensors(state, metadata={"format": "pt"}))
    put("checkpoint_state", "latest.txt", b"\x05epoch_0_step_4\n")
    for rank in (0, 1):
        ranges = {f"{p}.{k}": [rank * n, n, 2 * n] for p, n in (("w", 8), ("b", 2)) for k in ("exp_avg", "exp_avg_sq")}
        shard = {"rank": rank, "world_size": 2, "ranges": ranges}
        put("checkpoint_state", f"optimizer_rank_{rank}.json", bytes([6 + rank]) + dump({
            "step_counts": {"w": 4, "b": 4}, "extra": {"lr_scheduler_num_steps": 4, "shard": shard}}).encode())
    put("checkpoint_state", "model_shard_index.json", b"\x08" + dump({"world_size": 2, "parameters": {
        "w": {"shape": [4, 4], "dtype": "f32", "parts": [{"file": "rank_0.safetensors", "offset": 0, "numel": 10},
                                                         {"file": "rank_1.safetensors", "offset": 10, "numel": 6}]},
        "b": {"shape": [4], "dtype": "f32", "parts": [{"file": "rank_1.safetensors", "offset": 0, "numel": 4}]}}}).encode())


JSON_TOKENS = ['"{"', '"}"', '"["', '"]"', '":"', '","', '"\\""', '"true"', '"false"', '"null"', '"-1"', '"0"',
               '"1e308"', '"-0.0"', '"18446744073709551616"', '"\\\\u0000"', '"\\\\ud800"']
KEYS = {
    "safetensors": ["__metadata__", "dtype", "shape", "data_offsets", "F32", "F16", "BF16", "F64", "I64", "I32",
                    "I16", "I8", "U8", "U16", "U32", "U64", "BOOL", "F8_E4M3", "F8_E5M2", "format"],
    "model_config": ["model_type", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "vocab_size",
                     "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "hidden_act",
                     "tie_word_embeddings", "rope_theta", "rope_scaling", "rope_parameters", "rope_type", "factor",
                     "sliding_window", "layer_types", "sliding_attention", "full_attention", "eos_token_id",
                     "torch_dtype", "dtype", "partial_rotary_factor", "short_factor", "long_factor", "yarn",
                     "longrope", "llama3", "attn_logit_softcapping", "query_pre_attn_scalar", "gemma3_text", "gemma3",
                     "sliding_window_pattern", "rope_local_base_freq", "text_config", "vision_config",
                     "siglip_vision_model", "image_size", "patch_size", "num_channels", "layer_norm_eps",
                     "vision_use_head", "mm_tokens_per_image", "image_token_index", "boi_token_index",
                     "eoi_token_index"],
    "tokenizer": ["model", "type", "BPE", "WordPiece", "Unigram", "vocab", "merges", "normalizer", "pre_tokenizer",
                  "post_processor", "decoder", "added_tokens", "special", "content", "Sequence", "NFC", "NFKC",
                  "Replace", "Prepend", "Split", "ByteLevel", "Metaspace", "Regex", "pattern", "byte_fallback",
                  "TemplateProcessing", "ignore_merges", "unk_token", "\\\\p{L}", "(?i:'s|'t)", "\\u2581"],
    "tokenizer_config": ["bos_token", "eos_token", "pad_token", "unk_token", "add_bos_token", "add_eos_token",
                         "model_max_length", "chat_template", "name", "template", "content", "__type", "AddedToken",
                         "added_tokens_decoder", "{{ messages }}", "{% for m in messages %}"],
    "dataset": ["context", "question", "answers", "text", "messages", "role", "content", "user", "assistant",
                "system", "tool", "tool_calls", "function", "arguments", "tools", "conversations", "from", "value",
                "human", "gpt", "answer", "ctx", "endings", "label", "data"],
    "adapter_config": ["peft_type", "LORA", "task_type", "CAUSAL_LM", "r", "lora_alpha", "lora_dropout",
                       "target_modules", "rank_pattern", "alpha_pattern", "use_rslora", "use_dora", "bias", "none",
                       "modules_to_save", "fan_in_fan_out", "base_model_name_or_path", "q_proj", "v_proj",
                       "layers.0.self_attn.q_proj", "layer_replication", "trainable_token_indices", "lora_bias"],
    "checkpoint_state": ["step", "epoch", "batches_yielded", "seed", "shuffle", "drop_last", "num_samples",
                         "batch_size", "default", "offset", "step_counts", "extra", "w.exp_avg", "b.exp_avg_sq",
                         "epoch_0_step_4", "../", "LATEST", "__metadata__", "dtype", "shape", "data_offsets", "F32",
                         "shard", "rank", "world_size", "ranges"],
}
YAML_TOKENS = [": ", "- ", "[", "]", "{", "}", ", ", "&a ", "*a", "<<: ", "? ", "!!str ", "!!int ", "!!map", "|",
               ">-", "'", '"', "#", "---", "...", "~", "null", "yes", "off", ".inf", ".nan", "0x1F", "0o17",
               "1:30", "1_000", "1.0e-5", "${HOME}", "${X,default}", "${oc.env:X}", "\\${", "_target_", "collate_fn",
               "dataloader", "peft", "loss_fn", "optimizer", "step_scheduler", "model", "dataset", "None", "True",
               "(1, 2)", "{'a': 1}", "\n  "]
JINJA_TOKENS = ["{{", "}}", "{%", "%}", "{#", "#}", "{%-", "-%}", "if", "elif", "else", "endif", "for", "in",
                "endfor", "set", "endset", "macro", "endmacro", "call", "endcall", "filter", "endfilter", "raw",
                "endraw", "loop.index", "loop.first", "loop.last", "not", "and", "or", "is", "defined", "none",
                "namespace(", "messages", "message['role']", "message.content", "tools", "add_generation_prompt",
                "bos_token", "eos_token", "raise_exception(", "strftime_now(", "|tojson", "|trim", "|length",
                "|join(", "|selectattr(", "|map(", "|items", "|default(", "range(", ".split(", ".strip()",
                ".startswith(", "~", "[::-1]", "[1:]", "tool_calls", "content", "role", "true", "false"]


def image_seeds():
    """Small images of every decoder path: baseline/progressive/greyscale/CMYK JPEG with EXIF, palette+tRNS, RGBA with
    eXIf and 16-bit PNG, lossy WebP with EXIF and lossless WebP with alpha (written by Pillow)."""
    import io

    from PIL import Image

    y, x = np.mgrid[0:8, 0:12]
    rgb = np.stack([x * 20, y * 30, (x + y) * 10], axis=-1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotated

    def save(name, image, fmt, **kwargs):
        buf = io.BytesIO()
        image.save(buf, fmt, **kwargs)
        put("image", name, buf.getvalue())

    im = Image.fromarray(rgb)
    save("rgb.jpg", im, "JPEG", quality=70, exif=exif.tobytes())
    save("grey_progressive.jpg", im.convert("L"), "JPEG", progressive=True)
    save("cmyk.jpg", im.convert("CMYK"), "JPEG")
    save("palette.png", im.quantize(6), "PNG", bits=4, transparency=1)
    save("rgba.png", Image.fromarray(np.dstack([rgb, rgb[..., 0]])), "PNG", exif=exif.tobytes())
    save("grey16.png", Image.fromarray(rgb[..., 0].astype(np.uint16) * 200), "PNG")
    save("lossy.webp", im, "WEBP", quality=50, exif=exif.tobytes())
    save("lossless_alpha.webp", Image.fromarray(np.dstack([rgb, rgb[..., 1]])), "WEBP", lossless=True)


def write_dict(name, tokens):
    lines = [f'"{t}"' if not t.startswith('"') else t for t in tokens]
    (FUZZ / f"{name}.dict").write_text("\n".join(lines) + "\n")


def escape(token):
    return token.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\x0A")


def main():
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    for target in ["safetensors", "model_config", "tokenizer", "tokenizer_config", "chat_template", "recipe_yaml",
                   "dataset", "adapter_config", "checkpoint_state", "image"]:
        (CORPUS / target).mkdir(parents=True)
    safetensors_seeds()
    model_config_seeds()
    tokenizer_seeds()
    tokenizer_config_seeds()
    chat_template_seeds()
    recipe_yaml_seeds()
    dataset_seeds()
    adapter_config_seeds()
    checkpoint_state_seeds()
    image_seeds()
    for name, keys in KEYS.items():
        write_dict(name, JSON_TOKENS + [f'"\\"{escape(k)}\\""' for k in keys])
    write_dict("recipe_yaml", [f'"{escape(t)}"' for t in YAML_TOKENS])
    write_dict("chat_template", [f'"{escape(t)}"' for t in JINJA_TOKENS])
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"corpus: {sum(1 for p in CORPUS.rglob('*') if p.is_file())} files, {total} bytes")


if __name__ == "__main__":
    main()
