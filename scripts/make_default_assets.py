#!/usr/bin/env python3
"""Writes the embedded default that `./scripts/finetune.sh` fine-tunes with no download:

  assets/tiny-squad/{train,validation}.jsonl  SQuAD-schema reading-comprehension records (id, title, context,
                                              question, answers{text, answer_start}) about invented places, made
                                              from templates with a fixed seed, so the answer is always a span of
                                              the context and a small model can learn to find it;
  assets/tiny-llama/                          a tokenizer trained by `tokenizers` on that text (byte-level BPE,
                                              Llama 3 style <|begin_of_text|> prefix and a chat template) and a
                                              LlamaForCausalLM with random weights written by `transformers`.

Run from the repository root with the oracle venv: .venv/bin/python scripts/make_default_assets.py
The output is deterministic for a given transformers / tokenizers version; it is committed, so users never run this.
"""
import json
import pathlib
import random

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "assets" / "tiny-squad"
MODEL = ROOT / "assets" / "tiny-llama"

SYLLABLES = ["ka", "lo", "mi", "ren", "tas", "vel", "dor", "an", "is", "bru", "sel", "tor", "fen", "gal", "or", "ur"]
TRADES = ["salt", "wool", "copper", "glass", "timber", "honey", "amber", "linen"]
RIVERS_FLOW = ["north", "south", "east", "west"]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def name(rng, parts=2):
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def record(rng, idx):
    town, river, founder = name(rng), name(rng), name(rng, 3)
    year, people = rng.randint(1200, 1900), rng.randint(2, 90) * 1000
    trade, flow = rng.choice(TRADES), rng.choice(RIVERS_FLOW)
    facts = [
        f"{town} is a town on the river {river}.",
        f"It was founded in {year} by {founder}.",
        f"About {people} people live there, and the town is known for its {trade}.",
        f"The {river} flows {flow} into the sea.",
    ]
    rng.shuffle(facts)
    context = " ".join(facts)
    question, answer = rng.choice([
        (f"Who founded {town}?", founder),
        (f"In which year was {town} founded?", str(year)),
        (f"What is {town} known for?", trade),
        (f"On which river is {town}?", river),
        (f"Which way does the {river} flow?", flow),
        (f"How many people live in {town}?", str(people)),
    ])
    return {"id": f"{idx:05d}", "title": town, "context": context, "question": question,
            "answers": {"text": [answer], "answer_start": [context.index(answer)]}}


def write_data():
    rng = random.Random(20261128)
    DATA.mkdir(parents=True, exist_ok=True)
    splits = {"train": [record(rng, i) for i in range(1024)], "validation": [record(rng, 1024 + i) for i in range(64)]}
    for split, rows in splits.items():
        with open(DATA / f"{split}.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return [r["context"] + " " + r["question"] for rows in splits.values() for r in rows]


def write_model(texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts + ["Context: Question: Answer: user assistant system"], trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                   pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    MODEL.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(MODEL)

    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=bos, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id, rope_theta=10000.0)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(MODEL)


if __name__ == "__main__":
    write_model(write_data())
    print(f"wrote {DATA} and {MODEL}")
