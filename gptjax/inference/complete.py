"""Text in, text out: prompts completed by a loaded model, as `gptjax sample` and
`gptjax.load(...).generate` both do.

A chat model (phase sft/dpo) is asked each prompt as a user turn through its chat template
(gptjax's, or an imported model's own: gptjax.chat_format); a pretrained model continues the
text. The token budget is capped to the context the longest
prompt leaves (as `gptjax chat` does), and the cap is reported once through `log`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gptjax import generation  # looked up at call time, so a test can stand in for it
from gptjax.chat_template import completion_text
from gptjax.errors import ConfigError
from gptjax.inference.load import LoadedModel

TEMPLATES = ("auto", "chat", "raw")


def uses_chat(loaded: LoadedModel, template: str) -> bool:
    """Whether prompts go through the chat template: `auto` follows the checkpoint's phase."""
    if template not in TEMPLATES:
        raise ConfigError(f"template {template!r}: use one of {TEMPLATES}")
    return template == "chat" or (template == "auto" and loaded.is_chat)


def capped_budget(
    prompts: Sequence[Sequence[int]], max_new_tokens: int, context: int, *, name: str
) -> tuple[int, str | None]:
    """(the budget that fits the longest prompt's remaining context, a note when it was cut).

    `name` is how the user spelled the budget (`--max-new-tokens`, `max_new_tokens`), for the
    note. A prompt that leaves no room to generate is a ConfigError.
    """
    longest = max(len(p) for p in prompts)
    room = context - longest
    which = "the prompt" if len(prompts) == 1 else "the longest prompt"
    if room <= 0:
        raise ConfigError(
            f"{which} takes {longest} tokens, the whole of the model's {context}-token context: "
            "no room to generate; shorten it"
        )
    if max_new_tokens <= room:
        return max_new_tokens, None
    return room, (
        f"note: {name} {max_new_tokens} capped to {room}: {which} takes {longest} of the "
        f"model's {context}-token context"
    )


def complete(
    loaded: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    template: str = "auto",
    log: Callable[[str], None] = print,
    budget_name: str = "max_new_tokens",
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> list[str]:
    """The completion text of each prompt (a chat answer, or the continuation of the text)."""
    if max_new_tokens <= 0:
        raise ConfigError(f"{budget_name} must be positive, got {max_new_tokens}")
    if not prompts:
        raise ConfigError("no prompts given; give a prompt or a list of them")
    tok = loaded.tokenizer
    chat = uses_chat(loaded, template)
    if chat:
        form = loaded.chat_format
        ids = [form.prompt(tok, [{"role": "user", "content": p}]) for p in prompts]
        stops = form.stop_ids(tok)
    else:
        ids, stops = [[tok.bos_id, *tok.encode(p)] for p in prompts], (tok.eos_id,)
    budget, note = capped_budget(
        ids, max_new_tokens, loaded.model_config.max_seq_len, name=budget_name
    )
    if note:
        log(note)
    with loaded.activated():
        outputs = generation.generate(
            loaded.graphdef,
            loaded.params,
            ids,
            max_new_tokens=budget,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            stop_ids=stops,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )
    return [
        completion_text(tok, asked, out, chat=chat) for asked, out in zip(ids, outputs, strict=True)
    ]
