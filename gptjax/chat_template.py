"""The one chat template, shared by SFT training and inference.

    <s> <|system|> content <|end|> <|user|> content <|end|> <|assistant|> content <|end|> ...

Each role symbol and `<|end|>` is a single reserved token (gptjax.tokenizer.CHAT_TOKENS); a
turn's content is `tokenizer.encode(content)`. For inference, `add_generation_prompt=True`
appends `<|assistant|>`: the model writes the answer and stops at `<|end|>`. Rendering a
conversation without its last assistant turn, with the generation prompt, gives exactly the
prefix of the full rendering, so the model is sampled in the state it was trained in.

Content is text, never markup: sentencepiece matches the chat symbols anywhere in its input,
so a literal "<|end|>" inside a message is spelled out in byte pieces here. Otherwise a user
could close a turn, or forge an assistant turn, by typing it.
"""

import re
from collections.abc import Sequence

from gptjax.errors import DataError
from gptjax.tokenizer import CHAT_TOKENS, Tokenizer

ROLES = ("system", "user", "assistant")
_ROLE_PIECES = dict(zip(ROLES, CHAT_TOKENS[:3], strict=True))
END_PIECE = CHAT_TOKENS[3]
_CHAT_TEXT = re.compile("(" + "|".join(re.escape(t) for t in CHAT_TOKENS) + ")")


def _chat_id(tokenizer: Tokenizer, piece: str) -> int:
    try:
        return tokenizer.token_id(piece)
    except DataError:
        raise DataError(
            f"tokenizer {tokenizer.sha256[:12]}… has no chat tokens ({' '.join(CHAT_TOKENS)}), "
            "which the chat template needs; train one with `gptjax tokenizer train`, or import "
            "a Hugging Face model with `gptjax import-hf --add-chat-tokens`"
        ) from None


def role_id(tokenizer: Tokenizer, role: str) -> int:
    """The id of the token that opens a `role` turn (`<|user|>` for "user")."""
    if role not in _ROLE_PIECES:
        raise DataError(f"unknown chat role {role!r}; use one of {ROLES}")
    return _chat_id(tokenizer, _ROLE_PIECES[role])


def end_of_turn_id(tokenizer: Tokenizer) -> int:
    """The id of `<|end|>`, which closes every turn; generation stops there."""
    return _chat_id(tokenizer, END_PIECE)


def check_messages(messages: object, where: str = "") -> list[dict]:
    """`messages` as a list of {"role", "content"} dicts, or DataError naming `where`.

    Roles come from ROLES, contents are strings, a system message may only come first, and
    at least one message is not a system message. Keys other than role and content are kept.
    """
    at = f"{where}: " if where else ""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{at}messages must be a non-empty list of {{role, content}} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataError(f"{at}message {i} is {type(message).__name__}, not an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(f"{at}message {i} has role {role!r}; use one of {ROLES}")
        if not isinstance(content, str):
            raise DataError(f"{at}message {i} content is {type(content).__name__}, not text")
        if role == "system" and i > 0:
            raise DataError(f"{at}message {i} is a system message; only the first may be one")
    if all(m["role"] == "system" for m in messages):
        raise DataError(f"{at}conversation has only a system message; add a user turn")
    return messages


def encode_content(tokenizer: Tokenizer, content: str) -> list[int]:
    """`tokenizer.encode(content)`, with any chat symbol in the text spelled as byte pieces."""
    ids: list[int] = []
    for i, part in enumerate(_CHAT_TEXT.split(content)):
        if i % 2:  # re.split puts the captured symbols at odd indices
            ids.extend(tokenizer.token_id(f"<0x{b:02X}>") for b in part.encode("utf-8"))
        elif part:
            ids.extend(tokenizer.encode(part))
    return ids


def render(
    tokenizer: Tokenizer, messages: Sequence[dict], *, add_generation_prompt: bool = False
) -> tuple[list[int], list[int]]:
    """(ids, loss_mask) of a conversation; equal lengths.

    The mask is 1 exactly on assistant content tokens and the `<|end|>` closing an assistant
    turn (the model must learn to stop), 0 on `<s>`, every role token, and the system and
    user turns. `add_generation_prompt` appends `<|assistant|>` (mask 0) for inference.
    """
    messages = check_messages(list(messages))
    if add_generation_prompt and messages[-1]["role"] == "assistant":
        raise DataError(
            "add_generation_prompt needs a conversation that does not end with an assistant "
            "turn; drop the last assistant message"
        )
    end = end_of_turn_id(tokenizer)
    ids, mask = [tokenizer.bos_id], [0]
    for message in messages:
        trained = int(message["role"] == "assistant")
        content = encode_content(tokenizer, message["content"])
        ids += [role_id(tokenizer, message["role"]), *content, end]
        mask += [0] + [trained] * (len(content) + 1)
    if add_generation_prompt:
        ids.append(role_id(tokenizer, "assistant"))
        mask.append(0)
    return ids, mask


def chat_prompt(tokenizer, user_text: str) -> list[int]:
    """The ids that ask `user_text` as a single user turn and open the assistant's reply."""
    return render(tokenizer, [{"role": "user", "content": user_text}], add_generation_prompt=True)[
        0
    ]


def prompt_ids(tokenizer, prompts, *, chat: bool) -> tuple[list[list[int]], tuple[int, ...]]:
    """(token ids of each prompt, stop ids): a chat model is asked each prompt as a user turn
    and stops at the end of its turn; a pretrained model continues `<s>` + the text."""
    if chat:
        return [chat_prompt(tokenizer, p) for p in prompts], (
            end_of_turn_id(tokenizer),
            tokenizer.eos_id,
        )
    return [[tokenizer.bos_id, *tokenizer.encode(p)] for p in prompts], (tokenizer.eos_id,)


def completion_text(tokenizer, prompt: list[int], new: list[int], *, chat: bool) -> str:
    """The text of the `new` ids generated after the `prompt` ids (from `prompt_ids`).

    A continuation is decode(prompt + new) minus decode(prompt): a sentencepiece tokenizer
    that encodes text with a leading "▁" (Llama-2's) drops the space of the first piece of
    whatever it decodes, so decode(new) alone would glue "▁return" onto the prompt. A chat
    answer is a message of its own, encoded alone the same way, so decode(new) is its text.
    """
    if chat:
        return tokenizer.decode(new)
    head, whole = tokenizer.decode(prompt), tokenizer.decode([*prompt, *new])
    # A tokenizer whose decoding of the prompt is not a prefix of the whole (none known)
    # falls back to the new ids alone rather than cutting the text at a wrong place.
    return whole[len(head) :] if whole.startswith(head) else tokenizer.decode(new)


def format_completion(prompt: str, completion: str, *, chat: bool) -> str:
    """How `gptjax sample` and the training log show a sample: a chat answer under its
    question, a continuation right after its prompt."""
    return f"--- {prompt}\n{completion}" if chat else f"---\n{prompt}{completion}"
