#!/usr/bin/env python3
"""Writes assets/tiny-smolvlm/: a tiny SmolVLMForConditionalGeneration with random weights written by
`transformers`, with its processor (the slow SmolVLM / Idefics 3 image processor: longest edge 64, cut into 32x32
tiles plus the global image; the processor expanding each <image> to its tiles' <fake_token_around_image>,
<row_r_col_c>, <global-img> and 4 <image> tokens per tile; SmolVLM's chat template) and a tokenizer trained by
`tokenizers` with SmolVLM's special tokens (<|endoftext|> <|im_start|> <|im_end|> <end_of_utterance>
<fake_token_around_image> <image> <global-img> and <row_1_col_1> .. <row_6_col_6>). The second vision-language
recipe's model.

Shapes: a SigLIP tower of 2 layers (hidden 32) on 32x32 tiles in 8x8 patches, pixel-shuffled by 2 to 4 tokens per
tile; a Llama decoder of 2 layers (hidden 48), LM head untied as SmolVLMConfig's default. Saved in float32.

The processor is saved as Idefics3Processor: SmolVLMProcessor builds the same image prompts but needs the num2words
package for its video prompts, which the oracle venv does not have; automodel reads both.

Run from the repository root with the oracle venv: .venv/bin/python scripts/make_tiny_smolvlm.py
The output is deterministic for a given transformers / tokenizers version; it is committed, so users never run this.
"""
import pathlib
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    Idefics3Processor,
    PreTrainedTokenizerFast,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
)
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_tiny_gemma3_vlm import corpus  # noqa: E402 - also lets processors be built without mistral_common

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "assets" / "tiny-smolvlm"

ROW_COL = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>",
            "<image>", "<global-img>"] + ROW_COL
TILE, PATCH, LONGEST_EDGE, SCALE = 32, 8, 64, 2
TOKENS_PER_TILE = (TILE // PATCH) ** 2 // SCALE**2


def write_tokenizer():
    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=450, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus() + ["User: Assistant: " * 4], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        extra_special_tokens={"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                              "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"},
    )


def main():
    tokenizer = write_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    assert [ids[t] for t in SPECIALS] == list(range(len(SPECIALS))), ids
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": LONGEST_EDGE},
                                                max_image_size={"longest_edge": TILE})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  chat_template=DEFAULT_CHAT_TEMPLATE, image_seq_len=TOKENS_PER_TILE)

    text = dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                rope_theta=10000.0, rms_norm_eps=1e-5, pad_token_id=ids["<|im_end|>"],
                bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<end_of_utterance>"])
    vision = dict(image_size=TILE, patch_size=PATCH, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2)
    config = SmolVLMConfig(text_config=text, vision_config=vision, scale_factor=SCALE,
                           image_token_id=ids["<image>"], tie_word_embeddings=False)
    torch.manual_seed(0)
    model = SmolVLMForConditionalGeneration(config)
    model.generation_config = GenerationConfig(bos_token_id=ids["<|im_start|>"], pad_token_id=ids["<|im_end|>"],
                                               eos_token_id=ids["<end_of_utterance>"])
    OUT.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT)
    processor.save_pretrained(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
