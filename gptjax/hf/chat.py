"""gptjax's chat template as Hugging Face tools read it, and an imported model's template.

An imported model that ships its own template (ChatML, Llama 3, ...) that renders a probe
conversation is recorded as a chat model that chats in that template (gptjax.chat_format),
stopping at the end ids its generation_config.json lists; export-hf writes it back unchanged.

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
from collections.abc import Sequence

from gptjax.chat_format import JinjaChat
from gptjax.chat_template import end_of_turn_id
from gptjax.errors import DataError
from gptjax.jinja_template import SPECIAL_TOKEN_NAMES
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


def generation_config(
    tokenizer: Tokenizer, *, chat: bool, stop_ids: Sequence[int] | None = None
) -> dict:
    """generation_config.json: a chat model's `generate` stops at `<|end|>` as at eos, or at
    `stop_ids` (a model that chats in its own template: the ids it was imported with)."""
    eos = [tokenizer.eos_id]
    end = _end_of_turn_or_none(tokenizer) if chat else None
    if end is not None and end != tokenizer.eos_id:
        eos.append(end)
    if stop_ids is not None:
        eos = list(stop_ids)
    return {
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": eos if len(eos) > 1 else eos[0],
        "pad_token_id": tokenizer.pad_id,
    }


def with_chat_files(
    files: dict[str, bytes],
    tokenizer: Tokenizer,
    *,
    chat: bool,
    stop_ids: Sequence[int] | None = None,
) -> dict:
    """A model directory's tokenizer `files` plus generation_config.json, and for a chat model
    with the chat tokens gptjax's template, which replaces any template an imported tokenizer
    brought along (in either place): gptjax's is the one the model was finetuned with.

    `stop_ids` is given for a model that chats in its own template (imported, not finetuned
    by gptjax): its files go back as they came, template included, and `generate` stops
    where it stopped before."""
    config = generation_config(tokenizer, chat=chat, stop_ids=stop_ids)
    config_bytes = (json.dumps(config, indent=2) + "\n").encode("utf-8")
    files = files | {"generation_config.json": config_bytes}
    if stop_ids is not None or not (chat and _end_of_turn_or_none(tokenizer) is not None):
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


# A conversation every chat template accepts (some refuse a system turn, or turns that do not
# alternate): the import checks the model's own template renders it before relying on it.
PROBE = (
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi. How can I help?"},
    {"role": "user", "content": "Name a colour."},
)


def _special_token_texts(files: dict[str, str]) -> dict[str, str]:
    """The named special tokens a template reads (`bos_token`, ...), as transformers gives them:
    tokenizer_config.json first, special_tokens_map.json for the ones it does not name."""
    texts: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # later ones win
        try:
            settings = json.loads(files.get(name, "{}"))
        except ValueError:
            continue  # read_hf_tokenizer has refused unreadable files already
        for key in SPECIAL_TOKEN_NAMES:
            value = settings.get(key) if isinstance(settings, dict) else None
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str):
                texts[key] = value
    return texts


def _end_ids(value) -> list[int]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def stop_ids(model_dir, model_config: dict, tokenizer: Tokenizer) -> list[int]:
    """The ids that end an answer: generation_config.json's eos_token_id (Llama 3 lists
    <|eot_id|> and <|end_of_text|>), else config.json's, and the tokenizer's eos."""
    declared, where = _end_ids(model_config.get("eos_token_id")), "config.json"
    path = model_dir / "generation_config.json"
    if path.is_file():
        try:
            generation = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DataError(f"{path} is not readable JSON: {error}") from None
        if isinstance(generation, dict) and generation.get("eos_token_id") is not None:
            declared, where = _end_ids(generation["eos_token_id"]), str(path)
    ids = list(dict.fromkeys([*declared, tokenizer.eos_id]))
    wrong = [i for i in ids if not 0 <= i < tokenizer.vocab_size]
    if wrong:
        raise DataError(
            f"{model_dir}: {where} names end id {wrong[0]}, outside the tokenizer's "
            f"{tokenizer.vocab_size} tokens"
        )
    return ids


def _as_pretrained(why: str, log) -> tuple[str, None]:
    log(
        f"note: the model's chat template is kept and exported back, but {why}; it is imported "
        "as a pretrained model: `sample` continues text, and `sample --template chat`/`chat` "
        "would use gptjax's template, which it was not finetuned with"
    )
    return "pretrain", None


def imported_phase(
    template: str | None, tokenizer: Tokenizer, model_dir, model_config: dict, log=print
) -> tuple[str, JinjaChat | None]:
    """(phase, chat format) an imported model is recorded with.

    "sft" (so `sample`, `chat`, `eval` and `gptjax.load` apply a chat template by default)
    when the model ships a template: gptjax's own (with its chat tokens; format None, the
    default), or its own Jinja template (ChatML, Llama 3, ...), which then renders its
    conversations (a `JinjaChat`). Otherwise "pretrain", with a note saying why.
    """
    if template is None:
        return "pretrain", None
    if is_gptjax_template(template):
        if _end_of_turn_or_none(tokenizer) is not None:
            return "sft", None
        return _as_pretrained(
            "its tokenizer lacks gptjax's chat tokens (import with --add-chat-tokens to add them)",
            log,
        )
    if tokenizer.bundle["backend"] != "tokenizers":
        # A sentencepiece model never matches special-token text such as "<s>" in its input,
        # so the rendered prompt would not encode as transformers encodes it.
        return _as_pretrained(
            "gptjax renders a model's own template only with a tokenizer.json tokenizer", log
        )
    files = tokenizer.bundle["files"]
    ends = stop_ids(model_dir, model_config, tokenizer)
    form = JinjaChat(template, _special_token_texts(files), ends)
    try:
        probe = form.prompt(tokenizer, list(PROBE))
    except DataError as error:
        return _as_pretrained(f"it fails on a probe conversation ({error})", log)
    if not set(probe) & set(ends):
        # E.g. ChatML over a tokenizer without <|im_end|>: the template's markers are plain
        # text to this model, and no answer would ever end at a token it stops at.
        names = ", ".join(str(tokenizer.backend.tk.id_to_token(i)) for i in ends)
        return _as_pretrained(
            f"its template closes no turn with an end token of the model ({names}), so the "
            "model was not trained with it",
            log,
        )
    return "sft", form
