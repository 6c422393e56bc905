#!/usr/bin/env python3
"""Writes assets/tiny-gemma3-vlm/: a tiny Gemma3ForConditionalGeneration with random weights written by
`transformers`, with its processor (Gemma3ImageProcessor for 64x64 images, Gemma3Processor expanding each image
to 16 soft tokens, Gemma 3's chat template) and a tokenizer trained by `tokenizers` that has Gemma 3's special
tokens (<pad> <eos> <bos> <unk> first, as in Gemma 3, then <start_of_turn>, <end_of_turn>, <start_of_image>,
<end_of_image>, <image_soft_token>). The default of the vision-language recipe and its examples.

Shapes: SigLIP tower of 2 layers (hidden 32) on 64x64 images in 8x8 patches, pooled to 16 tokens per image; a
gemma3_text decoder of 2 layers (hidden 48; a sliding-window layer with window 32, then a global one). About
90k parameters, saved in float32 (~350 KB).

Run from the repository root with the oracle venv: .venv/bin/python scripts/make_tiny_gemma3_vlm.py
The output is deterministic for a given transformers / tokenizers version; it is committed, so users never run this.
"""
import pathlib

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessor,
    Gemma3Processor,
    GenerationConfig,
    PreTrainedTokenizerFast,
)

from transformers.processing_utils import ProcessorMixin


def _skip_when_a_backend_is_missing(check):
    """ProcessorMixin checks the tokenizer against every tokenizer class transformers knows, importing each; where an
    optional backend cannot be imported (mistral_common without jsonschema) that check fails for any tokenizer. Our
    tokenizer's class is checked directly instead."""

    def checked(self, name, arg):
        try:
            return check(self, name, arg)
        except ModuleNotFoundError:
            assert name != "tokenizer" or isinstance(arg, PreTrainedTokenizerFast), (name, type(arg))

    return checked


ProcessorMixin.check_argument_for_proper_class = _skip_when_a_backend_is_missing(
    ProcessorMixin.check_argument_for_proper_class
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "assets" / "tiny-gemma3-vlm"

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
            "<end_of_image>", "<image_soft_token>"]
IMAGE_SIZE, PATCH, TOKENS_PER_IMAGE = 64, 8, 16

# Gemma 3's chat template (google/gemma-3-*-it): a system message joins the first user turn, the assistant is
# "model", image parts become <start_of_image> (which the processor expands).
CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

SHAPES = ["circle", "square", "triangle", "star", "cross", "ring", "diamond", "stripe"]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
NUMBERS = ["one", "two", "three", "four", "five", "six"]


def corpus():
    """What the recipe's generated captions and questions are made of."""
    lines = []
    for s in SHAPES:
        for c in COLOURS:
            lines.append(f"A {c} {s} on a plain background. What colour is the {s}? It is {c}.")
            for n in NUMBERS:
                lines.append(f"How many {c} {s}s are there? There are {n} {c} {s}s in the picture.")
    lines.append("Describe the image. What shape is it? Which colour? Count the shapes. user model system")
    return lines


def write_tokenizer():
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>", "sot_token": "<start_of_turn>",
                              "eot_token": "<end_of_turn>"},
    )


def save_gemma3_vlm(out, text, vision, image_size, tokens_per_image, dtype=torch.float32):
    """A random Gemma3ForConditionalGeneration of the given text / vision config shapes with the tokenizer, processor
    and chat template above, saved by transformers into `out` (bench/vlm_compare.py writes larger shapes with it)."""
    tokenizer = write_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    assert [ids[t] for t in SPECIALS] == list(range(len(SPECIALS))), ids
    image_processor = Gemma3ImageProcessor(size={"height": image_size, "width": image_size})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE,
                                image_seq_length=tokens_per_image)
    text = dict(text, vocab_size=len(tokenizer), pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"],
                eos_token_id=ids["<eos>"])
    config = Gemma3Config(text_config=text, vision_config=dict(vision, image_size=image_size),
                          mm_tokens_per_image=tokens_per_image, image_token_index=ids["<image_soft_token>"],
                          boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"])
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config)
    # transformers starts the projection at zero, which would hide the images from the decoder until trained.
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.02)
    model.generation_config = GenerationConfig(bos_token_id=ids["<bos>"], pad_token_id=ids["<pad>"],
                                               eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]])
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.to(dtype).save_pretrained(out)
    processor.save_pretrained(out)


def main():
    text = dict(
        hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=12, query_pre_attn_scalar=12, sliding_window=32, max_position_embeddings=512,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters=dict(full_attention=dict(rope_type="default", rope_theta=1000000.0),
                             sliding_attention=dict(rope_type="default", rope_theta=10000.0)),
    )
    vision = dict(patch_size=PATCH, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  vision_use_head=False)
    save_gemma3_vlm(OUT, text, vision, IMAGE_SIZE, TOKENS_PER_IMAGE)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
