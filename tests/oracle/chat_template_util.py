"""Helpers for the chat-template oracle: tiny tokenizer directories carrying a chat template, our renderer
(the `automodel chat-template` CLI) and the reference (transformers' apply_chat_template / render_jinja_template)."""
import json
import pathlib
import subprocess

from conftest import BUILD

CLI = BUILD / "automodel"
TEMPLATES = pathlib.Path(__file__).resolve().parent / "chat_templates"


def tiny_tokenizer_object(special):
    """A small byte-level BPE trained with the `tokenizers` package (the template does not depend on it)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=list(special))
    tok.train_from_iterator(["hello world, the quick brown fox jumps over the lazy dog"] * 4, trainer)
    return tok


def save_tokenizer_dir(path, chat_template, bos="<s>", eos="</s>", extra_special=None):
    """A transformers tokenizer directory (save_pretrained) with this chat template and special tokens."""
    from transformers import PreTrainedTokenizerFast

    special = {"bos_token": bos, "eos_token": eos}
    special.update(extra_special or {})
    tok = PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer_object(special.values()), **special)
    tok.chat_template = chat_template
    tok.save_pretrained(str(path))
    return path


def reference(path, messages, add_generation_prompt, tools=None, template_name=None):
    """transformers' rendering: (text, None) or (None, error message)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    try:
        kwargs = {"chat_template": template_name} if template_name else {}
        text = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                       tokenize=False, **kwargs)
        return text, None
    except Exception as e:  # noqa: BLE001 - the template's own errors are part of the contract
        return None, str(e)


def ours(path, messages, add_generation_prompt, tools=None, template_name=None, tmp=None):
    """Our rendering through the CLI: (text, None) or (None, stderr)."""
    tmp = pathlib.Path(tmp or path)
    msg_file = tmp / "messages.json"
    msg_file.write_text(json.dumps(messages, ensure_ascii=False), encoding="utf-8")
    cmd = [str(CLI), "chat-template", "--tokenizer", str(path), "--messages", str(msg_file)]
    if add_generation_prompt:
        cmd.append("--add-generation-prompt")
    if tools is not None:
        tools_file = tmp / "tools.json"
        tools_file.write_text(json.dumps(tools, ensure_ascii=False), encoding="utf-8")
        cmd += ["--tools", str(tools_file)]
    if template_name:
        cmd += ["--template", template_name]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        return None, proc.stderr.decode("utf-8", "replace")
    return proc.stdout.decode("utf-8"), None
