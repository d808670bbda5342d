"""gptjax's chat template as Hugging Face tools read it, and an imported model's template.

`CHAT_TEMPLATE` is gptjax.chat_template.render written in Jinja: `apply_chat_template` with it
gives the same ids as gptjax (tests/test_hf.py checks system, multi-turn and generation-prompt
cases). One difference stays: gptjax spells a literal "<|end|>" typed inside a message in byte
tokens, while Hugging Face tokenizers match special tokens anywhere in the rendered text.

The template is exported only for chat checkpoints (phase sft/dpo): a pretrained model whose
tokenizer happens to hold the role tokens was never trained on them, and a template would tell
TRL, vLLM or `transformers chat` that it answers questions.
"""

from __future__ import annotations

import json

from gptjax.chat_template import end_of_turn_id
from gptjax.errors import DataError
from gptjax.tokenizer import Tokenizer

# transformers >= 4.43 reads it (and transformers 5 writes it) next to tokenizer_config.json;
# when present it takes priority over a "chat_template" key in that file.
TEMPLATE_FILE = "chat_template.jinja"

# Roles, the system-first rule and the token layout are those of gptjax.chat_template.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown chat role ' + message['role'] + '; use system, user or "
    "assistant') }}"
    "{% endif %}"
    "{% if message['role'] == 'system' and not loop.first %}"
    "{{ raise_exception('only the first message may be a system message') }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def _end_of_turn_or_none(tokenizer: Tokenizer) -> int | None:
    """`<|end|>`'s id, or None when the tokenizer has no chat tokens."""
    try:
        return end_of_turn_id(tokenizer)
    except DataError:
        return None


def generation_config(tokenizer: Tokenizer, *, chat: bool) -> dict:
    """generation_config.json: a chat model's `generate` stops at `<|end|>` as at eos."""
    eos = [tokenizer.eos_id]
    end = _end_of_turn_or_none(tokenizer) if chat else None
    if end is not None and end != tokenizer.eos_id:
        eos.append(end)
    return {
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": eos if len(eos) > 1 else eos[0],
        "pad_token_id": tokenizer.pad_id,
    }


def with_chat_files(files: dict[str, bytes], tokenizer: Tokenizer, *, chat: bool) -> dict:
    """A model directory's tokenizer `files` plus generation_config.json, and for a chat model
    with the chat tokens gptjax's template, which replaces any template an imported tokenizer
    brought along (in either place): gptjax's is the one the model was finetuned with."""
    config = json.dumps(generation_config(tokenizer, chat=chat), indent=2) + "\n"
    files = files | {"generation_config.json": config.encode("utf-8")}
    if not (chat and _end_of_turn_or_none(tokenizer) is not None):
        return files
    files[TEMPLATE_FILE] = CHAT_TEMPLATE.encode("utf-8")
    if "tokenizer_config.json" in files:
        settings = json.loads(files["tokenizer_config.json"])
        if settings.pop("chat_template", None) is not None:
            files["tokenizer_config.json"] = json.dumps(settings, indent=2).encode("utf-8")
    return files


def declared_template(files: dict[str, str]) -> str | None:
    """The chat template a Hugging Face model ships: chat_template.jinja first (transformers'
    priority), else tokenizer_config.json's "chat_template" (a string, or the "default" of a
    list of named templates)."""
    if TEMPLATE_FILE in files:
        return files[TEMPLATE_FILE]
    try:
        value = json.loads(files.get("tokenizer_config.json", "{}")).get("chat_template")
    except (ValueError, AttributeError):
        return None
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default")
    return value if isinstance(value, str) else None


def is_gptjax_template(template: str | None) -> bool:
    return template is not None and template.strip() == CHAT_TEMPLATE


def imported_phase(template: str | None, tokenizer: Tokenizer, log=print) -> str:
    """The phase an imported model is recorded with: "sft" (so `sample` and `chat` apply the
    chat template by default) when it ships gptjax's own template and has its chat tokens.

    A foreign template (ChatML, Llama 3, ...) is kept with the tokenizer and exported back
    unchanged, but gptjax renders conversations with its own template only, so such a model
    stays "pretrain" and the log says so: asking it through gptjax's template would ask it in
    a format it was never trained on.
    """
    if template is None:
        return "pretrain"
    if is_gptjax_template(template) and _end_of_turn_or_none(tokenizer) is not None:
        return "sft"
    why = (
        "its tokenizer lacks gptjax's chat tokens (import with --add-chat-tokens to add them)"
        if is_gptjax_template(template)
        else "it is not gptjax's (gptjax renders chats with its own template only)"
    )
    log(
        f"note: the model's chat template is kept and exported back, but {why}; it is imported "
        "as a pretrained model: `sample` continues text, and `sample --template chat`/`chat` "
        "would use gptjax's template, which it was not finetuned with"
    )
    return "pretrain"
