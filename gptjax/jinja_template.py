"""A Hugging Face chat template (Jinja) rendered as `transformers.apply_chat_template` does.

Templates from the Hub are untrusted code, so they run in jinja2's immutable sandbox with the
settings and helpers transformers gives them: `trim_blocks` and `lstrip_blocks`, the
`loopcontrols` extension, a `tojson` filter that does not escape HTML, `raise_exception` and
`strftime_now`; the variables are `messages`, `add_generation_prompt`, `tools`/`documents`
(None) and the tokenizer's named special tokens (`bos_token`, `eos_token`, ...).

jinja2 is imported here only, when an imported model's own template is rendered.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Sequence

from gptjax.errors import ConfigError, DataError

# transformers' PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES: what templates may read.
SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


@functools.lru_cache(maxsize=8)
def _compiled(source: str):
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ConfigError(
            "this model has its own chat template, which needs jinja2: pip install 'gptjax[hf]'"
        ) from None

    version = tuple(int(part) for part in jinja2.__version__.split(".")[:3] if part.isdigit())
    if version < (3, 1, 6):  # older ones have known sandbox escapes (transformers refuses too)
        raise ConfigError(
            f"jinja2 {jinja2.__version__} is too old to run a model's chat template safely; "
            "pip install 'jinja2>=3.1.6'"
        )

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes HTML characters, which would change the prompt text.
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(format):
        return datetime.datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as error:
        raise DataError(f"the model's chat template is not valid Jinja: {error}") from None


def render_text(
    source: str,
    messages: Sequence[dict],
    *,
    add_generation_prompt: bool,
    special_tokens: dict[str, str],
) -> str:
    """The text template `source` makes of `messages`; DataError with the template's reason
    when it refuses the conversation (a role it does not know, turns that do not alternate)."""
    template = _compiled(source)
    plain = [dict(message) for message in messages]  # a template never edits the caller's
    try:
        return template.render(
            messages=plain,
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **special_tokens,
        )
    except Exception as error:  # template code is arbitrary: any failure is the template's
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"the model's chat template refuses this conversation: {reason}") from None
