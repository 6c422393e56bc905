"""Tiny random causal LMs, created and saved by `transformers` itself, one per supported family with that
family's features switched on. Used by test_models.py as the reference our loader must match.

Every model has 2-4 layers, hidden size 64-128 and a vocabulary of at least 1000. Weights are random (seeded);
after transformers' init, norm weights and biases are randomized too, so that a norm or bias that is dropped or
misapplied shows in the logits."""
import pathlib

import torch
import transformers

VOCAB = 1000
PAD = 3  # pad_token_id of every model: nn.Embedding(padding_idx=PAD) in transformers

# name -> (model_type, config kwargs). Comments say which features the variant switches on.
VARIANTS = {
    # GQA (4 query heads, 2 kv heads), q/k/v/o and MLP biases, llama3 rope scaling (all three frequency bands:
    # wavelengths above, between and below original_max_position_embeddings / {low,high}_freq_factor), untied head.
    "llama_gqa_bias_llama3": (
        "llama",
        dict(
            hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            attention_bias=True, mlp_bias=True, max_position_embeddings=256, tie_word_embeddings=False,
            rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                                 high_freq_factor=4.0, original_max_position_embeddings=64),
        ),
    ),
    # Explicit head_dim (24) != hidden / heads (16), linear rope scaling, tied head.
    "llama_headdim_linear_tied": (
        "llama",
        dict(
            hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
            head_dim=24, max_position_embeddings=128, tie_word_embeddings=True,
            rope_parameters=dict(rope_type="linear", rope_theta=500.0, factor=3.0),
        ),
    ),
    # Dynamic NTK rope with max_position_embeddings (12) below the test sequence length (so it rescales), MQA.
    "llama_dynamic_mqa": (
        "llama",
        dict(
            hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
            max_position_embeddings=12, tie_word_embeddings=False,
            rope_parameters=dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0),
        ),
    ),
    # Sliding window (8) smaller than the test sequence length, GQA.
    "mistral_sliding": (
        "mistral",
        dict(
            hidden_size=64, intermediate_size=112, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            sliding_window=8, max_position_embeddings=128, tie_word_embeddings=False,
            rope_parameters=dict(rope_type="default", rope_theta=1000.0),
        ),
    ),
    # q/k/v biases (no o bias), tied head, GQA.
    "qwen2_tied": (
        "qwen2",
        dict(
            hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=128, tie_word_embeddings=True,
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
        ),
    ),
    # q/k RMSNorm per head, explicit head_dim (32 != 64 / 4), GQA, untied.
    "qwen3_qknorm": (
        "qwen3",
        dict(
            hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=32, max_position_embeddings=128, tie_word_embeddings=False,
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
        ),
    ),
    # (1 + w) norms, embeddings scaled by sqrt(hidden), gelu-tanh MLP, tied head, MQA, head_dim 32.
    "gemma_tied": (
        "gemma",
        dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
            head_dim=32, max_position_embeddings=128, hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        ),
    ),
    # Attention and final logit soft-capping (small caps, so they bite), alternating sliding-window layers with
    # a window (6) below the sequence length, query_pre_attn_scalar (24) != head_dim (16), pre/post feed-forward
    # norms, tied head.
    "gemma2_softcap_sliding": (
        "gemma2",
        dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, query_pre_attn_scalar=24, sliding_window=6, attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0, max_position_embeddings=128, hidden_activation="gelu_pytorch_tanh",
            tie_word_embeddings=True, rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        ),
    ),
    # Gemma 3: (1 + w) q/k norms, sliding layers (window 5 below the sequence length) with their own RoPE base
    # between global layers with linear-scaled RoPE, query_pre_attn_scalar (20) != head_dim (16), sandwich norms,
    # final logit soft-capping, tied head. attn_logit_softcapping is set but transformers' Gemma 3 ignores it.
    "gemma3_text_local_global": (
        "gemma3_text",
        dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, query_pre_attn_scalar=20, sliding_window=5, attn_logit_softcapping=4.0,
            final_logit_softcapping=5.0, max_position_embeddings=128, hidden_activation="gelu_pytorch_tanh",
            tie_word_embeddings=True,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_parameters=dict(
                full_attention=dict(rope_type="linear", rope_theta=100000.0, factor=8.0),
                sliding_attention=dict(rope_type="default", rope_theta=100.0),
            ),
        ),
    ),
    # Fused qkv_proj / gate_up_proj, longrope with original_max_position_embeddings (16) below the test sequence
    # length, so the long factors and the attention factor sqrt(1 + ln(64/16) / ln 16) apply; GQA, untied.
    "phi3_longrope_long": (
        "phi3",
        dict(
            hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=64, original_max_position_embeddings=16, tie_word_embeddings=False,
            rope_parameters=dict(
                rope_type="longrope", rope_theta=10000.0, original_max_position_embeddings=16,
                short_factor=[1.0 + 0.25 * i for i in range(8)], long_factor=[1.0 + 1.5 * i for i in range(8)],
            ),
        ),
    ),
    # Longrope with the sequence shorter than original_max_position_embeddings (short factors), and a partial
    # rotary factor (only the first half of each head is rotated).
    "phi3_longrope_short_partial": (
        "phi3",
        dict(
            hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            max_position_embeddings=256, original_max_position_embeddings=32, tie_word_embeddings=False,
            rope_parameters=dict(
                rope_type="longrope", rope_theta=10000.0, original_max_position_embeddings=32,
                partial_rotary_factor=0.5, short_factor=[1.0 + 0.5 * i for i in range(4)],
                long_factor=[2.0 + 2.0 * i for i in range(4)],
            ),
        ),
    ),
    # Phi-3-mini's checkpoints carry a sliding_window; here below the test sequence length.
    "phi3_sliding": (
        "phi3",
        dict(
            hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            max_position_embeddings=128, sliding_window=7, tie_word_embeddings=False,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        ),
    ),
}

FAMILIES = sorted({t for t, _ in VARIANTS.values()})


def family(name):
    return VARIANTS[name][0]


def make_config(name):
    model_type, kwargs = VARIANTS[name]
    kwargs = dict(kwargs)
    kwargs.setdefault("vocab_size", VOCAB)
    kwargs.setdefault("initializer_range", 0.1)  # O(1) attention logits, so masks and windows matter
    kwargs.setdefault("pad_token_id", PAD)
    kwargs.setdefault("bos_token_id", 1)
    kwargs.setdefault("eos_token_id", 2)
    kwargs.setdefault("rms_norm_eps", 1e-5)
    return transformers.CONFIG_MAPPING[model_type](**kwargs)


def _randomize(model, model_type, generator):
    """Norm weights and biases: transformers initializes them to constants; make them non-trivial."""
    offset_norms = model_type in ("gemma", "gemma2", "gemma3_text")  # scale is (1 + w), w initialized to 0
    with torch.no_grad():
        for pname, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if "norm" in pname and p.dim() == 1:
                p.copy_(0.5 * noise if offset_norms else 1.0 + 0.2 * noise)
            elif pname.endswith(".bias"):
                p.copy_(0.1 * noise)


def build(name, out_dir, seed=0):
    """Creates variant `name` with random weights and saves it (config.json, generation_config.json,
    model.safetensors) into out_dir with transformers' save_pretrained. Returns out_dir."""
    out_dir = pathlib.Path(out_dir)
    config = make_config(name)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    _randomize(model, family(name), torch.Generator().manual_seed(seed + 1))
    model.save_pretrained(str(out_dir))
    return out_dir


def load_reference(model_dir, dtype=torch.float32):
    """transformers' own model from a directory: eager attention, eval mode."""
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), attn_implementation="eager", dtype=dtype)
    model.eval()
    return model


if __name__ == "__main__":
    import sys

    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny_models")
    for n in VARIANTS:
        print(build(n, root / n))
