"""Chat templates rendered by `automodel chat-template` must be byte-identical to transformers'
apply_chat_template(tokenize=False): real model families on several conversations, and the interpreter's
constructs one by one."""
import json

import pytest

from chat_template_conversations import CONTENT_PARTS, PLAIN, REASONING, TOOL_CALL, WEATHER_TOOL
from chat_template_cases import CASES, CONVERSATION
from chat_template_util import CLI, TEMPLATES, ours, reference, save_tokenizer_dir

pytestmark = pytest.mark.skipif(not CLI.exists(), reason=f"{CLI} not built")

# family -> (template file, special tokens, supports tools)
FAMILIES = {
    "llama3": ("llama3.jinja", {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>"}, True),
    "qwen2_5": ("qwen2_5.jinja", {"bos": "<|endoftext|>", "eos": "<|im_end|>"}, True),
    "mistral": ("mistral.jinja", {"bos": "<s>", "eos": "</s>"}, True),
    "gemma": ("gemma.jinja", {"bos": "<bos>", "eos": "<eos>"}, False),
    "phi3": ("phi3.jinja", {"bos": "<s>", "eos": "<|endoftext|>"}, False),
    "smollm2": ("smollm2.jinja", {"bos": "<|im_start|>", "eos": "<|im_end|>"}, False),
    "llama2": ("llama2.jinja", {"bos": "<s>", "eos": "</s>"}, False),
    "qwen3": ("qwen3.jinja", {"bos": "<|endoftext|>", "eos": "<|im_end|>"}, True),
    "gemma3": ("gemma3.jinja", {"bos": "<bos>", "eos": "<eos>"}, False),
    "deepseek_r1": ("deepseek_r1.jinja", {"bos": "<｜begin▁of▁sentence｜>", "eos": "<｜end▁of▁sentence｜>"}, False),
}


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    dirs = {}
    for name, (file, special, _) in FAMILIES.items():
        path = tmp_path_factory.mktemp(name)
        save_tokenizer_dir(path, (TEMPLATES / file).read_text(encoding="utf-8"), **special)
        dirs[name] = path
    return dirs


def check_same(path, messages, agp, tools=None, tmp=None, template_name=None):
    ref, ref_err = reference(path, messages, agp, tools, template_name)
    got, err = ours(path, messages, agp, tools, template_name, tmp=tmp)
    if ref_err is not None:
        assert got is None, f"transformers raised {ref_err!r} but we rendered {got!r}"
        assert ref_err in err, f"error differs: ours {err!r}, transformers {ref_err!r}"
        return "error"
    assert err is None, f"we failed: {err}"
    assert got == ref, f"rendering differs\n--- ours\n{got!r}\n--- transformers\n{ref!r}"
    return "ok"


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("conversation", sorted(PLAIN))
@pytest.mark.parametrize("agp", [False, True])
def test_family_plain(family_dirs, family, conversation, agp, tmp_path):
    check_same(family_dirs[family], PLAIN[conversation], agp, tmp=tmp_path)


@pytest.mark.parametrize("family", sorted(n for n, f in FAMILIES.items() if f[2]))
@pytest.mark.parametrize("agp", [False, True])
def test_family_tools(family_dirs, family, agp, tmp_path):
    assert check_same(family_dirs[family], TOOL_CALL, agp, tools=[WEATHER_TOOL], tmp=tmp_path) == "ok"
    # Tools declared, plain conversation.
    assert check_same(family_dirs[family], PLAIN["system_user"], agp, tools=[WEATHER_TOOL], tmp=tmp_path) == "ok"


@pytest.mark.parametrize("family", ["qwen3", "qwen2_5", "llama3", "deepseek_r1"])
@pytest.mark.parametrize("agp", [False, True])
def test_family_reasoning(family_dirs, family, agp, tmp_path):
    assert check_same(family_dirs[family], REASONING, agp, tmp=tmp_path) == "ok"


@pytest.mark.parametrize("agp", [False, True])
def test_family_content_parts(family_dirs, agp, tmp_path):
    assert check_same(family_dirs["gemma3"], CONTENT_PARTS, agp, tmp=tmp_path) == "ok"


def test_deepseek_tool_calls_as_json_strings(family_dirs, tmp_path):
    # DeepSeek-R1 concatenates the arguments, so they must be a JSON string there.
    msgs = json.loads(json.dumps(TOOL_CALL))
    msgs[1]["tool_calls"][0]["function"]["arguments"] = json.dumps(msgs[1]["tool_calls"][0]["function"]["arguments"])
    msgs[1]["content"] = "Let me check."
    for agp in (False, True):
        assert check_same(family_dirs["deepseek_r1"], msgs, agp, tmp=tmp_path) == "ok"


def test_template_errors_match(family_dirs, tmp_path):
    # Gemma rejects a system message; Llama 2 rejects non-alternating roles: same message as transformers.
    assert check_same(family_dirs["gemma"], PLAIN["system_user"], False, tmp=tmp_path) == "error"
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert check_same(family_dirs["llama2"], bad, False, tmp=tmp_path) == "error"


def test_inline_and_named_templates(tmp_path):
    # tokenizer_config.json with chat_template as a string, and as a list of named templates.
    inline = tmp_path / "inline"
    inline.mkdir()
    qwen = (TEMPLATES / "qwen2_5.jinja").read_text(encoding="utf-8")
    (inline / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": None, "eos_token": {"content": "<|im_end|>", "special": True}, "chat_template": qwen}))
    named = tmp_path / "named"
    named.mkdir()
    smol = (TEMPLATES / "smollm2.jinja").read_text(encoding="utf-8")
    (named / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "</s>", "chat_template": [{"name": "default", "template": smol},
                                                {"name": "tool_use", "template": qwen}]}))
    from transformers.utils.chat_template_utils import render_jinja_template

    msgs = PLAIN["system_multi_turn"]
    ref = render_jinja_template([msgs], chat_template=qwen, add_generation_prompt=True, eos_token="<|im_end|>")[0][0]
    assert ours(inline, msgs, True, tmp=tmp_path) == (ref, None)
    ref = render_jinja_template([msgs], chat_template=smol, add_generation_prompt=False, eos_token="</s>")[0][0]
    assert ours(named, msgs, False, tmp=tmp_path) == (ref, None)
    ref = render_jinja_template([msgs], chat_template=qwen, tools=[WEATHER_TOOL], eos_token="</s>")[0][0]
    assert ours(named, msgs, False, tools=[WEATHER_TOOL], tmp=tmp_path) == (ref, None)  # tools -> "tool_use"
    ref = render_jinja_template([msgs], chat_template=qwen, eos_token="</s>")[0][0]
    assert ours(named, msgs, False, template_name="tool_use", tmp=tmp_path) == (ref, None)
    got, err = ours(named, msgs, False, template_name="nope", tmp=tmp_path)
    assert got is None and "no chat template named 'nope'" in err


@pytest.mark.parametrize("case", range(len(CASES)), ids=[c[0] for c in CASES])
def test_construct(case, tmp_path):
    """One construct per template, rendered by transformers' own Jinja environment and by us."""
    from transformers.utils.chat_template_utils import _normalize_chat_messages, render_jinja_template

    name, template = CASES[case]
    (tmp_path / "chat_template.jinja").write_text(template, encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    try:
        ref = render_jinja_template([_normalize_chat_messages(CONVERSATION)], chat_template=template, add_generation_prompt=True,
                                    tools=[WEATHER_TOOL], bos_token="<s>", eos_token="</s>")[0][0]
        ref_err = None
    except Exception as e:  # noqa: BLE001
        ref, ref_err = None, str(e)
    got, err = ours(tmp_path, CONVERSATION, True, tools=[WEATHER_TOOL], tmp=tmp_path)
    if ref_err is not None:
        assert got is None, f"transformers raised {ref_err!r}, we rendered {got!r}"
        return
    assert err is None, f"we failed: {err}"
    assert got == ref, f"\n--- ours\n{got!r}\n--- transformers\n{ref!r}"


def test_special_tokens_map_json(tmp_path):
    # A legacy special_tokens_map.json supplies tokens the tokenizer_config.json lacks (transformers merges it).
    path = save_tokenizer_dir(tmp_path / "tok", "{{ bos_token }}|{{ eos_token }}|{{ pad_token }}|{{ unk_token }}")
    (path / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": {"content": "<s>", "lstrip": False}, "eos_token": "</s>", "pad_token": "</s>"}))
    msgs = [{"role": "user", "content": "x"}]
    ref = reference(path, msgs, False)
    assert ref[1] is None and ref[0].startswith("<s>|</s>|</s>")
    assert ours(path, msgs, False, tmp=tmp_path) == ref


def test_saved_template_dict(tmp_path):
    # transformers 5 saves several templates as chat_template.jinja (default) + additional_chat_templates/<name>.jinja.
    smol = (TEMPLATES / "smollm2.jinja").read_text(encoding="utf-8")
    qwen = (TEMPLATES / "qwen2_5.jinja").read_text(encoding="utf-8")
    path = save_tokenizer_dir(tmp_path / "tok", {"default": smol, "tool_use": qwen, "rag": "RAG {{ messages | length }}"})
    assert (path / "additional_chat_templates").is_dir()
    msgs = PLAIN["system_multi_turn"]
    for name in (None, "tool_use", "rag"):
        for tools in (None, [WEATHER_TOOL]):
            ref = reference(path, msgs, True, tools, template_name=name)
            assert ref[1] is None
            assert ours(path, msgs, True, tools, template_name=name, tmp=tmp_path) == ref, (name, tools)
