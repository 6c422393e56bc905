"""The VLM data path against NeMo Automodel's: our datasets (local conversations, rdr-items, CORD-v2, MedPix shapes)
collated by recipes/vlm_collate, compared tensor by tensor with NeMo's default_collate_fn logic (reproduced here from
nemo_automodel/components/datasets/vlm/collate_fns.py and datasets.py) run through transformers' Gemma3Processor on the
tiny processor of vlm_processor_util.py: multi-turn, multi-image conversations in one batch, right and left padding.
input_ids, attention_mask, token_type_ids, labels and pixel_values must be identical (pixel_values before NeMo's
bfloat16 cast, bit for bit)."""
import json
import pathlib
import random

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import OpError, run_op
import vlm_processor_util
from vlm_processor_util import load_processor, photo, save_processor_dir

NEMO = "nemo_automodel.components.datasets.vlm."


# --- NeMo's logic, as collate_fns.default_collate_fn runs it for Gemma 3 -----------------------------------------
def _derive_turn_markers(tokenizer):
    sentinel = "XSENTINELMARKERX"

    def ids(result):
        try:
            return list(result["input_ids"])
        except (KeyError, TypeError):
            return list(result)

    all_ids = ids(tokenizer.apply_chat_template(
        [{"role": "user", "content": "u"}, {"role": "assistant", "content": sentinel}], tokenize=True,
        add_generation_prompt=False))
    user_ids = ids(tokenizer.apply_chat_template([{"role": "user", "content": "u"}], tokenize=True,
                                                 add_generation_prompt=False))
    sentinel_ids = tokenizer.encode(sentinel, add_special_tokens=False)
    for i in range(len(all_ids) - len(sentinel_ids) + 1):
        if all_ids[i:i + len(sentinel_ids)] == sentinel_ids:
            return all_ids[len(user_ids):i], all_ids[i + len(sentinel_ids)]
    raise AssertionError("sentinel not found")


def _build_labels_from_markers(input_ids_batch, marker, stop_id):
    marker_t = torch.tensor(marker, dtype=input_ids_batch.dtype)
    out = []
    for encoded in input_ids_batch:
        labels = torch.full_like(encoded, -100)
        i, n = 0, len(encoded)
        while i <= n - len(marker):
            if torch.equal(encoded[i:i + len(marker)], marker_t):
                start = end = i + len(marker)
                while end < n and encoded[end].item() != stop_id:
                    end += 1
                if end < n:
                    end += 1
                labels[start:end] = encoded[start:end]
                i = end
            else:
                i += 1
        out.append(labels)
    return torch.stack(out)


def _preload(conversation):
    """NeMo's _preload_media: image paths opened as PIL RGB images."""
    out = []
    for message in conversation:
        content = message["content"]
        if isinstance(content, list):
            content = [dict(p, image=Image.open(p["image"]).convert("RGB")) if p.get("type") == "image" else p
                       for p in content]
        out.append(dict(message, content=content))
    return out


def nemo_collate(processor, conversations, max_length=None):
    """default_collate_fn up to its bfloat16 cast (labels as NeMo makes them, before corrected_labels)."""
    conversations = [_preload(c) for c in conversations]
    kwargs = {"padding": True, "truncation": True}
    if max_length is not None:
        kwargs.update(padding="max_length", max_length=max_length)
    batch = processor.apply_chat_template(conversations, tokenize=True, return_dict=True, return_tensors="pt",
                                          processor_kwargs=kwargs)
    marker, stop_id = _derive_turn_markers(processor.tokenizer)
    labels = _build_labels_from_markers(batch["input_ids"], marker, stop_id)
    batch["labels"] = labels[:, 1:]
    batch["label_positions_real"] = batch["attention_mask"][:, 1:] == 1  # for corrected_labels, not NeMo's
    shape = batch["input_ids"].shape
    for key in list(batch.keys()):
        v = batch[key]
        if isinstance(v, torch.Tensor) and v.shape == shape and key != "labels":
            batch[key] = v[:, :-1]
    return batch


def corrected_labels(processor, batch):
    """NeMo's labels with what it gets wrong set right (see the README): no loss on image tokens, <start_of_image> /
    <end_of_image> (in an assistant message that holds an image) or padding (after a turn that never closes)."""
    tok = processor.tokenizer
    masked = {tok.convert_tokens_to_ids(t) for t in ("<image_soft_token>", "<start_of_image>", "<end_of_image>")}
    labels = batch["labels"].clone()
    for t in masked:
        labels[labels == t] = -100
    labels[~batch["label_positions_real"]] = -100
    return labels


def json2token(obj, sort_json_key=True):
    """nemo_automodel.components.datasets.vlm.utils.json2token."""
    if type(obj) is dict:
        if len(obj) == 1 and "text_sequence" in obj:
            return obj["text_sequence"]
        keys = sorted(obj.keys(), reverse=True) if sort_json_key else obj.keys()
        return "".join(rf"<s_{k}>" + json2token(obj[k], sort_json_key) + rf"</s_{k}>" for k in keys)
    if type(obj) is list:
        return r"<sep/>".join([json2token(item, sort_json_key) for item in obj])
    return str(obj)


def describe(image, answer, question="Describe this image."):
    """NeMo's make_rdr_dataset / make_cord_v2_dataset / make_medpix_dataset conversation."""
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]}]


# --- data ----------------------------------------------------------------------------------------------------------
def save_image(path, height, width, seed, mode="RGB"):
    img = Image.fromarray(photo(height, width, seed))
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path.name


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("vlm_data")
    (d / "img").mkdir()
    names = [f"img/{save_image(d / 'img' / f'p{i}.png', h, w, i, mode)}"
             for i, (h, w, mode) in enumerate([(20, 30, "RGB"), (48, 48, "RGBA"), (64, 40, "L"), (33, 17, "P"),
                                               (40, 64, "RGB"), (12, 12, "RGB")])]
    return d, names


def conversations(names):
    img = lambda i: {"type": "image", "image": names[i]}  # noqa: E731
    txt = lambda t: {"type": "text", "text": t}  # noqa: E731
    return [
        {"messages": [
            {"role": "user", "content": [img(0), txt("What colour is the square?")]},
            {"role": "assistant", "content": [txt("It is red.")]},
            {"role": "user", "content": [txt("And this one?"), img(1)]},
            {"role": "assistant", "content": [txt("Blue, with a circle.")]}]},
        {"conversation": [
            {"role": "system", "content": [txt("You count shapes.")]},
            {"role": "user", "content": [img(2), img(3), txt("How many shapes in both pictures?")]},
            {"role": "assistant", "content": [txt("Five")]}]},
        {"messages": [
            {"role": "user", "content": "No picture here: say hello."},
            {"role": "assistant", "content": "hello"}]},
        {"messages": [
            {"role": "user", "content": [txt("Describe"), img(4)]},
            {"role": "assistant", "content": [txt("A long answer about the picture, with several words in it.")]},
            {"role": "user", "content": [img(5)]},
            {"role": "assistant", "content": [txt("Small.")]}]},
    ]


def with_images(conversation, root):
    return [dict(m, content=[dict(p, image=str(root / p["image"])) if p.get("type") == "image" else p
                             for p in m["content"]] if isinstance(m["content"], list) else m["content"])
            for m in conversation]


def byte_level_tokenizer(special):
    """A byte-level BPE that encodes any text (as Gemma's byte-fallback tokenizer does): NeMo finds the assistant turn
    markers by encoding a sentinel answer, which the 300-token tokenizer of vlm_processor_util would drop."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(special),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["What colour is the square? It is red. How many shapes? Describe this image."] * 4,
                            trainer)
    return tok


@pytest.fixture(scope="module", params=["right", "left"])
def processor_dir(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"proc_{request.param}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vlm_processor_util, "tiny_tokenizer_object", byte_level_tokenizer)
        save_processor_dir(d, size=32, image_seq_length=4)
    if request.param == "left":
        config = json.loads((d / "tokenizer_config.json").read_text())
        config["padding_side"] = "left"
        (d / "tokenizer_config.json").write_text(json.dumps(config))
    processor = load_processor(d)
    assert processor.tokenizer.padding_side == request.param
    return d, processor


def ours(processor_dir, target, path, indices, **params):
    r = run_op("vlm_collate", {}, {"model_dir": str(processor_dir),
                                   "dataset": {"_target_": target, "path_or_dataset": str(path)},
                                   "indices": list(indices), **params})
    return r.outputs


def assert_same(out, ref, processor):
    input_ids, attention_mask, labels, token_type_ids = out[:4]
    np.testing.assert_array_equal(input_ids, ref["input_ids"].numpy())
    np.testing.assert_array_equal(attention_mask, ref["attention_mask"].numpy())
    np.testing.assert_array_equal(token_type_ids, ref["token_type_ids"].numpy())
    np.testing.assert_array_equal(labels, corrected_labels(processor, ref).numpy())
    if "pixel_values" in ref:
        assert len(out) == 5
        pv = ref["pixel_values"].numpy()
        assert out[4].dtype == np.float32 and out[4].shape == pv.shape
        assert out[4].tobytes() == pv.astype(np.float32).tobytes()
    else:
        assert len(out) == 4


@pytest.mark.parametrize("indices", [[0, 1, 2, 3], [3, 0], [2], [1, 2]])
def test_conversations_batch_equals_nemo_collate(processor_dir, data_dir, indices):
    pdir, processor = processor_dir
    root, names = data_dir
    records = conversations(names)
    write_jsonl(root / "chat.jsonl", records)
    out = ours(pdir, "automodel.datasets.vlm.make_conversation_dataset", root / "chat.jsonl", indices)
    ref = nemo_collate(processor, [with_images(records[i].get("messages") or records[i]["conversation"], root)
                                   for i in indices])
    assert_same(out, ref, processor)
    assert (out[2] != -100).sum() > 0


def test_labels_cover_each_answer_and_its_end_of_turn(processor_dir, data_dir):
    pdir, processor = processor_dir
    root, names = data_dir
    write_jsonl(root / "chat.jsonl", conversations(names))
    out = ours(pdir, "automodel.datasets.vlm.make_conversation_dataset", root / "chat.jsonl", [0])
    tok = processor.tokenizer
    supervised = [int(t) for t in out[2][0] if t != -100]
    assert tok.decode(supervised) == "It is red.<end_of_turn>Blue, with a circle.<end_of_turn>"


def test_image_in_an_assistant_turn_gets_no_loss(processor_dir, data_dir):
    """NeMo labels every token of an assistant turn, image tokens too; ours masks them (and the delimiters)."""
    pdir, processor = processor_dir
    root, names = data_dir
    record = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Draw a dot."}]},
        {"role": "assistant", "content": [{"type": "image", "image": names[5]}, {"type": "text", "text": "Done."}]}]}
    write_jsonl(root / "assistant_image.jsonl", [record])
    out = ours(pdir, "automodel.datasets.vlm.make_conversation_dataset", root / "assistant_image.jsonl", [0])
    ref = nemo_collate(processor, [with_images(record["messages"], root)])
    assert_same(out, ref, processor)
    image_token = processor.tokenizer.convert_tokens_to_ids("<image_soft_token>")
    assert (ref["labels"] == image_token).sum() == 4 and (out[2] == image_token).sum() == 0


def test_rdr_cord_medpix_records_equal_nemo_formats(processor_dir, data_dir):
    pdir, processor = processor_dir
    root, names = data_dir
    rng = random.Random(0)
    cases = []
    rdr = [{"image": names[i], "text": f"item {i}: a {rng.choice(['red', 'green'])} box"} for i in range(3)]
    write_jsonl(root / "rdr.jsonl", rdr)
    cases.append(("make_rdr_dataset", "rdr.jsonl", [describe(str(root / r["image"]), r["text"]) for r in rdr]))
    parses = [{"menu": [{"nm": "Tea", "price": "3"}, {"nm": "Cake", "cnt": 2}], "total": {"total_price": "7"}},
              {"text_sequence": "plain"}, {"b": {"a": "1"}, "a": True}]
    cord = [{"image": names[0], "ground_truth": json.dumps({"gt_parse": parses[0]})},
            {"image": {"bytes": None, "path": names[1]}, "ground_truth": json.dumps({"gt_parses": parses[1:]})}]
    write_jsonl(root / "cord.jsonl", cord)
    # NeMo draws one of gt_parses at random; record i takes parse i mod their count.
    cases.append(("make_cord_v2_dataset", "cord.jsonl",
                  [describe(str(root / names[0]), json2token(parses[0])),
                   describe(str(root / names[1]), json2token(parses[1 + 1 % 2]))]))
    medpix = [{"image_id": names[2], "question": "Which organ?", "answer": "The liver."},
              {"image_id": names[4], "question": "Any lesion?", "answer": "No."}]
    write_jsonl(root / "medpix.jsonl", medpix)
    cases.append(("make_medpix_dataset", "medpix.jsonl",
                  [describe(str(root / r["image_id"]), r["answer"], r["question"]) for r in medpix]))
    for name, file, reference in cases:
        out = ours(pdir, NEMO + "datasets." + name, root / file, range(len(reference)))
        assert_same(out, nemo_collate(processor, reference), processor)


def test_max_length_pads_every_batch_to_it(processor_dir, data_dir):
    pdir, processor = processor_dir
    root, names = data_dir
    records = conversations(names)
    write_jsonl(root / "chat.jsonl", records)
    out = ours(pdir, "automodel.datasets.vlm.make_conversation_dataset", root / "chat.jsonl", [2, 1], max_length=128)
    assert out[0].shape == (2, 127)
    ref = nemo_collate(processor, [with_images(records[2]["messages"], root),
                                   with_images(records[1]["conversation"], root)], max_length=128)
    assert_same(out, ref, processor)
    # NeMo would truncate, cutting image tokens or the answer: ours refuses, naming the record.
    with pytest.raises(OpError, match=r"(?s)more than collate_fn.max_length 8.*chat.jsonl:1 \[record 0\]"):
        ours(pdir, "automodel.datasets.vlm.make_conversation_dataset", root / "chat.jsonl", [0], max_length=8)


def test_unreadable_image_names_the_record(processor_dir, tmp_path):
    pdir, _ = processor_dir
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    write_jsonl(tmp_path / "d.jsonl", [{"image": "bad.png", "text": "x"}])
    with pytest.raises(OpError, match=r"d.jsonl:1 \[record 0\].*bad.png"):
        ours(pdir, NEMO + "datasets.make_rdr_dataset", tmp_path / "d.jsonl", [0])


def test_embedded_tiny_vlm_data_equals_nemo_collate(processor_dir):
    """assets/tiny-vlm-data (scripts/make_tiny_vlm_data.py): captions, questions, multi-turn and two-image records."""
    pdir, processor = processor_dir
    root = pathlib.Path(__file__).resolve().parents[2] / "assets" / "tiny-vlm-data"
    records = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    for indices in ([0, 1, 2, 3, 4], [len(records) - 1, 9, len(records) - 2]):
        out = ours(pdir, "automodel.datasets.vlm.make_conversation_dataset", root / "train.jsonl", indices)
        ref = nemo_collate(processor, [with_images(records[i]["messages"], root) for i in indices])
        assert_same(out, ref, processor)


def test_dataset_command_shows_each_conversation_collated(processor_dir, data_dir, tmp_path):
    """`automodel dataset -c recipe.yaml --text` on a NeMo-shaped VLM recipe: each conversation as the collate makes it
    alone, with its decoded and supervised text."""
    import subprocess

    from vlm_processor_util import CLI

    pdir, processor = processor_dir
    root, names = data_dir
    records = conversations(names)
    write_jsonl(root / "chat.jsonl", records)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
model:
  _target_: nemo_automodel.NeMoAutoModelForImageTextToText.from_pretrained
  pretrained_model_name_or_path: /nonexistent
processor:
  _target_: transformers.AutoProcessor.from_pretrained
  pretrained_model_name_or_path: {pdir}
dataset:
  _target_: {NEMO}datasets.make_medpix_dataset
  path_or_dataset: /nonexistent
validation_dataset:
  _target_: automodel.datasets.vlm.make_conversation_dataset
  path_or_dataset: {root / "chat.jsonl"}
dataloader:
  collate_fn:
    _target_: {NEMO}collate_fns.default_collate_fn
""")
    r = subprocess.run([str(CLI), "dataset", "-c", str(recipe), "--validation", "--limit", "2", "--text"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [line["index"] for line in lines] == [0, 1]
    for line in lines:
        out = ours(pdir, "automodel.datasets.vlm.make_conversation_dataset", root / "chat.jsonl", [line["index"]])
        assert line["input_ids"] == out[0][0].tolist() and line["labels"] == out[2][0].tolist()
        assert line["token_type_ids"] == out[3][0].tolist()
        assert line["pixel_values_shape"] == list(out[4].shape)
    assert lines[0]["label_text"] == "It is red.<end_of_turn>Blue, with a circle.<end_of_turn>"
    assert lines[1]["messages"][1]["content"][0]["image"] == str(root / names[2])
    r = subprocess.run([str(CLI), "dataset", "-c", str(recipe)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "dataset path not found" in r.stderr, r.stderr


def test_processor_without_what_the_collate_needs_is_an_error(data_dir, tmp_path):
    root, names = data_dir
    write_jsonl(root / "chat.jsonl", conversations(names))

    def error(pdir):
        with pytest.raises(OpError) as e:
            ours(pdir, "automodel.datasets.vlm.make_conversation_dataset", root / "chat.jsonl", [0])
        return str(e.value)

    # vlm_processor_util's own tokenizer drops the sentinel's letters, so no turn markers can be found (NeMo falls
    # back to searching for each answer's re-tokenized text).
    save_processor_dir(tmp_path / "narrow", size=32, image_seq_length=4)
    assert "cannot find the assistant turn's markers" in error(tmp_path / "narrow")
    for name, edit, message in [("no_pad", lambda c: c.pop("pad_token"), "the tokenizer has no pad token"),
                                ("bad_side", lambda c: c.update(padding_side="middle"),
                                 'padding_side must be "left" or "right", got "middle"')]:
        d = tmp_path / name
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(vlm_processor_util, "tiny_tokenizer_object", byte_level_tokenizer)
            save_processor_dir(d, size=32, image_seq_length=4)
        config = json.loads((d / "tokenizer_config.json").read_text())
        edit(config)
        (d / "tokenizer_config.json").write_text(json.dumps(config))
        assert message in error(d), name
