"""How a chat model's conversations become token ids: gptjax's template, or the model's own.

Every model gptjax finetunes chats in gptjax's template (`gptjax.chat_template`). A Hugging
Face model imported with its own chat template (ChatML, Llama 3, ...) keeps it: `import-hf`
records it in the checkpoint metadata as "chat_format" (the Jinja source, the special tokens it
reads, the ids that end an answer) and `sample`, `chat`, `eval` and `gptjax.load` render with
it, as `transformers.apply_chat_template` does: the rendered text is encoded with the model's
own tokenizer, whose special tokens in the text become their ids, and generation stops at each
of the model's end ids. Checkpoints without the record use gptjax's template.

Both formats answer the same questions: the prompt ids of a conversation (generation prompt
appended), its (ids, loss mask) with the assistant answers scored, a pair's answer ids, and the
stop ids.
"""

from __future__ import annotations

from collections.abc import Sequence

from gptjax.chat_template import check_messages, end_of_turn_id, render
from gptjax.errors import CheckpointError, DataError
from gptjax.jinja_template import render_text
from gptjax.tokenizer import Tokenizer

METADATA_KEY = "chat_format"


class GptjaxChat:
    """gptjax's own template (`gptjax.chat_template`)."""

    name = "gptjax"

    def prompt(self, tokenizer: Tokenizer, messages: Sequence[dict]) -> list[int]:
        return render(tokenizer, messages, add_generation_prompt=True)[0]

    def render(self, tokenizer: Tokenizer, messages: Sequence[dict]):
        return render(tokenizer, messages)

    def stop_ids(self, tokenizer: Tokenizer) -> tuple[int, ...]:
        return (end_of_turn_id(tokenizer), tokenizer.eos_id)

    pair_ids = None  # gptjax.data.preferences renders pairs in this template by default


class JinjaChat:
    """An imported model's own Jinja template, with its special tokens and stop ids."""

    name = "the model's own"

    def __init__(self, template: str, special_tokens: dict[str, str], stop_ids: Sequence[int]):
        self.template, self.special_tokens = template, dict(special_tokens)
        self._stops = tuple(int(i) for i in stop_ids)

    def record(self) -> dict:
        """What checkpoint metadata holds (`from_metadata` reads it back)."""
        return {
            "kind": "jinja",
            "template": self.template,
            "special_tokens": self.special_tokens,
            "stop_ids": list(self._stops),
        }

    def text(self, messages: Sequence[dict], *, add_generation_prompt: bool) -> str:
        return render_text(
            self.template,
            messages,
            add_generation_prompt=add_generation_prompt,
            special_tokens=self.special_tokens,
        )

    def _ids(self, tokenizer: Tokenizer, messages, add_generation_prompt: bool) -> list[int]:
        # The template writes bos itself when the model wants one (Llama 3's does, ChatML's
        # does not): transformers encodes the rendering without adding special tokens, and
        # `encode` adds none.
        return tokenizer.encode(self.text(messages, add_generation_prompt=add_generation_prompt))

    def prompt(self, tokenizer: Tokenizer, messages: Sequence[dict]) -> list[int]:
        messages = check_messages(list(messages))
        if messages[-1]["role"] == "assistant":
            raise DataError(
                "a prompt ends with the turn to answer; drop the last assistant message"
            )
        return self._ids(tokenizer, messages, True)

    def stop_ids(self, tokenizer: Tokenizer) -> tuple[int, ...]:
        return self._stops

    def _answer_end(self, ids: list[int], prompt: list[int], where: str) -> int:
        """Where the answer that follows `prompt` inside `ids` ends (after its stop id)."""
        if ids[: len(prompt)] != prompt:
            raise DataError(
                f"{where}: the chat template's rendering of the conversation does not begin "
                "with its rendering of the prompt, so the answer's tokens cannot be told apart"
            )
        for end in range(len(prompt), len(ids)):
            if ids[end] in self._stops:
                return end + 1
        raise DataError(f"{where}: the chat template closes the answer with none of the stop ids")

    def render(self, tokenizer: Tokenizer, messages: Sequence[dict]):
        """(ids, loss_mask): 1 on each assistant answer's tokens and the stop id closing it
        (what generation must write), 0 elsewhere, as gptjax's template scores answers."""
        messages = check_messages(list(messages))
        ids = self._ids(tokenizer, messages, False)
        mask = [0] * len(ids)
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            if i == 0:
                raise DataError("a conversation cannot open with an assistant turn")
            prompt = self.prompt(tokenizer, messages[:i])
            end = self._answer_end(ids, prompt, f"assistant turn {i}")
            mask[len(prompt) : end] = [1] * (end - len(prompt))
        return ids, mask

    def pair_ids(self, pair: dict, tokenizer: Tokenizer):
        """(prompt, chosen, rejected) ids of a preference pair, each answer up to its stop id."""
        prompt = self.prompt(tokenizer, pair["messages"])
        answers = []
        for text in (pair["chosen"], pair["rejected"]):
            reply = {"role": "assistant", "content": text}
            ids = self._ids(tokenizer, [*pair["messages"], reply], False)
            answers.append(ids[len(prompt) : self._answer_end(ids, prompt, "a preference pair")])
        return prompt, answers[0], answers[1]


GPTJAX = GptjaxChat()


def chat_format_of(metadata: dict) -> GptjaxChat | JinjaChat:
    """The format a checkpoint's metadata records; gptjax's when it records none."""
    record = metadata.get(METADATA_KEY)
    if record is None:
        return GPTJAX
    if not isinstance(record, dict) or record.get("kind") != "jinja":
        raise CheckpointError(
            f"the checkpoint's {METADATA_KEY} record is not one this gptjax reads "
            f"({str(record)[:80]}); update gptjax or re-import the model"
        )
    return JinjaChat(record["template"], record["special_tokens"], record["stop_ids"])
