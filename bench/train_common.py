"""Shared definitions of the training benchmark (bench/train_compare.py): model shapes, the synthetic text both
frameworks train on, and the FLOP count behind the MFU column. Pure Python: the harness imports it without torch."""
import json
import math
import random

# Llama-architecture shapes. vocab_size is the real model's (the LM head is a large part of the compute); the
# benchmark tokenizer only uses the first TOKENIZER_VOCAB ids.
SHAPES = {
    "tiny": dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=2048, tie_word_embeddings=True, max_position_embeddings=4096,
                 rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
    # HuggingFaceTB/SmolLM2-135M
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
                         max_position_embeddings=8192, rms_norm_eps=1e-5,
                         rope_parameters={"rope_type": "default", "rope_theta": 100000.0}),
    # meta-llama/Llama-3.2-1B
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True,
                         max_position_embeddings=131072, rms_norm_eps=1e-5,
                         rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 8192}),
    # meta-llama/Llama-3.1-8B (docs/scaling.md's large shape; its fp32 model directory takes 32 GB)
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False,
                         max_position_embeddings=131072, rms_norm_eps=1e-5,
                         rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 8192}),
}

TOKENIZER_VOCAB = 1024
SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"]

# The LoRA of the benchmark: NeMo Automodel's PeftConfig and peft's LoraConfig with the same adapters.
LORA_RANK, LORA_ALPHA = 8, 32
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Column names of the benchmark's JSONL (the automodel side maps them with ColumnMappedTextInstructionDataset).
TEXT_COLUMN, ANSWER_COLUMN, ANSWER = "text", "answer", "end"

_SYLLABLES = ["ka", "lo", "mi", "ren", "tas", "vel", "dor", "an", "is", "bru", "sel", "tor", "fen", "gal", "or", "ur",
              "pe", "qua", "zin", "hal", "mo", "sti", "ve", "nak"]


def words(count=4000, seed=7):
    rng = random.Random(seed)
    return ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(count)]


def text_of(word_list, seed, num_words):
    """One training text: num_words pseudo-words drawn with a Zipf-like skew (so BPE merges matter)."""
    rng = random.Random(seed)
    n = len(word_list)
    return " ".join(word_list[min(n - 1, int(n * rng.random() ** 3))] for _ in range(num_words))


def tokenizer_corpus(lines=3000, words_per_line=60):
    w = words()
    return [text_of(w, 1_000_000 + i, words_per_line) for i in range(lines)]


def sample_text(record):
    """The string both sides tokenize: ColumnMappedTextInstructionDataset's plain prompt "{question} " + answer."""
    return record[TEXT_COLUMN] + " " + record[ANSWER_COLUMN]


def write_data(path, seq, num_samples):
    """num_samples texts of seq + 8 words each: every word is at least one byte-level BPE token, so after the
    BOS every text has more than seq + 1 tokens and truncation to seq + 1 gives seq inputs and seq labels."""
    w = words()
    with open(path, "w") as f:
        for i in range(num_samples):
            f.write(json.dumps({TEXT_COLUMN: text_of(w, 1000 * seq + i, seq + 8), ANSWER_COLUMN: ANSWER}) + "\n")


def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def linear_shapes(cfg):
    """(in, out) of each adapted projection of one decoder layer."""
    h, i, d = cfg["hidden_size"], cfg["intermediate_size"], head_dim(cfg)
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "gate_proj": (h, i),
            "up_proj": (h, i), "down_proj": (i, h)}


def param_counts(cfg):
    """matmul: the parameters every token multiplies (decoder linears + norms + LM head; the input embedding is a
    lookup and is left out, the LM head counted once even when tied); total: the model's parameters; lora: the
    adapter parameters (rank LORA_RANK on every LORA_TARGETS projection)."""
    h, v, layers = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    per_layer = sum(i * o for i, o in linear_shapes(cfg).values()) + 2 * h
    body = layers * per_layer + h
    total = body + v * h + (0 if cfg.get("tie_word_embeddings") else v * h)
    lora = layers * sum(LORA_RANK * (i + o) for i, o in linear_shapes(cfg).values())
    return {"matmul": body + v * h, "total": total, "lora": lora}


def train_flops_per_token(cfg, seq, mode):
    """Model FLOPs of one trained token (the README states the formula):
    full: 6 * N_matmul + 12 * L * n_heads * head_dim * seq
    lora: 4 * N_matmul + 6 * N_lora + 12 * L * n_heads * head_dim * seq
    Recomputation under activation checkpointing is not counted (model FLOPs, not hardware FLOPs)."""
    p = param_counts(cfg)
    attention = 12 * cfg["num_hidden_layers"] * cfg["num_attention_heads"] * head_dim(cfg) * seq
    if mode == "full":
        return 6 * p["matmul"] + attention
    return 4 * p["matmul"] + 6 * p["lora"] + attention


def fmt_count(n):
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.{1 if n < 10 * scale else 0}f}{unit}"
    return str(n)


def mean(xs):
    return sum(xs) / len(xs) if xs else math.nan
