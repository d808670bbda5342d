"""The raw-text format: a conversation as a pretrained (base) model reads text.

    <s> turn text \n turn text \n ... last prompt turn text \n  answer text </s>

A base model never saw the chat symbols, so `gptjax eval --template raw` asks it in plain
text: the prompt turns' contents one per line (no roles), then the answer as the document's
continuation, ended by `</s>` as pretraining ends every document. The answer is encoded on its
own (as a generated continuation is decoded), and its tokens and `</s>` are the scored ones,
as the answer and `<|end|>` are in the chat format. A chat symbol typed inside a message is
spelled in byte pieces, as the chat template does, so it is text in either format.
"""

from __future__ import annotations

from collections.abc import Sequence

from gptjax.chat_template import check_messages, encode_content
from gptjax.errors import DataError
from gptjax.tokenizer import Tokenizer


def raw_prompt(tokenizer: Tokenizer, messages: Sequence[dict]) -> list[int]:
    """`<s>` and the prompt turns' text, one line each (the last ends with a newline too)."""
    messages = check_messages(list(messages))
    if messages[-1]["role"] == "assistant":
        raise DataError("a raw prompt ends with the turn to answer; drop the last assistant turn")
    text = "".join(message["content"] + "\n" for message in messages)
    return [tokenizer.bos_id, *encode_content(tokenizer, text)]


def raw_answer(tokenizer: Tokenizer, text: str) -> list[int]:
    """The answer's ids and `</s>`: what a base model must write after the prompt."""
    return [*encode_content(tokenizer, text), tokenizer.eos_id]


def render_raw(tokenizer: Tokenizer, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
    """(ids, loss_mask) of a conversation ending with the assistant's answer: the mask is 1
    on the answer's tokens and `</s>`, 0 on the prompt (as `chat_template.render`'s)."""
    messages = check_messages(list(messages))
    if messages[-1]["role"] != "assistant":
        raise DataError(
            f"a raw rendering scores the last turn as the answer; it is a {messages[-1]['role']} "
            "turn, not the assistant's"
        )
    prompt = raw_prompt(tokenizer, messages[:-1])
    answer = raw_answer(tokenizer, messages[-1]["content"])
    return prompt + answer, [0] * len(prompt) + [1] * len(answer)
