"""`gptjax chat WORKDIR`: an interactive conversation with a trained model in the terminal.

The session keeps the message history and renders it with the chat template the model was
trained with (gptjax's, or an imported model's own: `gptjax.chat_format`), so every reply is
generated from the whole conversation. The reply is streamed as it is decoded and ends at a
stop token (the end of its turn) or the token budget.
When the conversation grows too long for the model's context, its oldest exchanges are
forgotten (with a note) so the reply keeps at least min(max_new_tokens, context / 2) tokens.
"""

from __future__ import annotations

from collections.abc import Callable

from gptjax.errors import ConfigError, DataError
from gptjax.generation import generate_stream
from gptjax.inference.load import LoadedModel

HELP = (
    "commands: /reset (forget the conversation) · /system TEXT (set the system prompt and "
    "start over) · /temperature X (0 = greedy) · /quit"
)


class ContextFull(ConfigError):
    """The user turn alone does not fit the model's context; it was not kept."""


class ChatSession:
    def __init__(
        self,
        loaded: LoadedModel,
        *,
        temperature: float = 0.7,
        top_k: int = 0,
        top_p: float = 0.9,
        max_new_tokens: int = 128,
        seed: int = 0,
        system: str | None = None,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 3,
    ):
        self.loaded = loaded
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.repetition_penalty = repetition_penalty
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.max_new_tokens, self.seed = max_new_tokens, seed
        self.system = system
        self.messages: list[dict] = []
        self.turns = 0  # replies generated so far: varies the seed from turn to turn

    def reset(self) -> None:
        self.messages = []

    def set_system(self, text: str) -> None:
        self.system = text or None
        self.reset()

    def set_temperature(self, text: str) -> None:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"/temperature takes a number >= 0, got {text!r}") from None
        if not value >= 0:  # also refuses NaN
            raise ConfigError(f"/temperature takes a number >= 0, got {text!r}")
        self.temperature = value

    def _conversation(self, user_text: str, history: list[dict] | None = None) -> list[dict]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        history = self.messages if history is None else history
        return [*system, *history, {"role": "user", "content": user_text}]

    def make_room(self, user_text: str) -> int:
        """Forgets the oldest exchanges until the conversation with `user_text` leaves the reply
        min(max_new_tokens, context / 2) tokens; returns how many exchanges were forgotten.
        ContextFull when `user_text` (with the system prompt) alone fills the context."""
        tok, context = self.loaded.tokenizer, self.loaded.model_config.max_seq_len
        room = min(self.max_new_tokens, context // 2)
        form = self.loaded.chat_format
        kept = list(self.messages)
        while True:
            prompt = form.prompt(tok, self._conversation(user_text, kept))
            if len(prompt) + room <= context or not kept:
                break
            kept = kept[2:]  # one user turn and its reply
        if len(prompt) >= context:
            raise ContextFull(
                f"this message is {len(prompt)} tokens with the chat markers, the model's "
                f"context is {context}: shorten it (it was not kept)"
            )
        forgotten = (len(self.messages) - len(kept)) // 2
        self.messages = kept
        return forgotten

    def reply(self, user_text: str, write: Callable[[str], None]) -> str:
        """Streams the assistant's answer to `write` and adds both turns to the history."""
        tok, context = self.loaded.tokenizer, self.loaded.model_config.max_seq_len
        self.make_room(user_text)
        form = self.loaded.chat_format
        prompt = form.prompt(tok, self._conversation(user_text))
        budget = min(self.max_new_tokens, context - len(prompt))
        ids: list[int] = []
        shown = ""
        with self.loaded.activated():
            for step in generate_stream(
                self.loaded.graphdef,
                self.loaded.params,
                [prompt],
                max_new_tokens=budget,
                temperature=self.temperature,
                top_k=self.top_k,
                top_p=self.top_p,
                seed=self.seed + self.turns,
                stop_ids=form.stop_ids(tok),
                repetition_penalty=self.repetition_penalty,
                no_repeat_ngram_size=self.no_repeat_ngram_size,
            ):
                if step[0] is None:
                    break
                ids.append(step[0])
                text = tok.decode(ids)
                # A character split over byte-fallback tokens decodes as U+FFFD until complete.
                if not text.endswith("\ufffd") and text.startswith(shown):
                    write(text[len(shown) :])
                    shown = text
        text = tok.decode(ids)
        write(text[len(shown) :])
        if len(ids) == budget:
            write(f" [cut at {budget} tokens]")
        self.turns += 1
        self.messages += [
            {"role": "user", "content": user_text},
            {"role": "assistant", "content": text},
        ]
        return text


def run_chat(
    session: ChatSession, read_line: Callable[[str], str], write, *, echo: bool = False
) -> None:
    """The read-reply loop; returns on /quit or end of input (Ctrl-D).

    `echo` repeats each input line after the prompt: for scripted (piped) input, which the
    terminal does not show.
    """
    write(f"chatting with {session.loaded.describe()}\n{HELP}\n")
    if not session.loaded.is_chat:
        write(
            f"note: this checkpoint's phase is {session.loaded.phase!r}, not finetuned to chat; "
            "its replies continue the text\n"
        )
    while True:
        try:
            line = read_line("you> ").strip()
        except EOFError:
            write("\n")
            return
        if echo:
            write(line + "\n")
        if not line:
            continue
        command, _, argument = line.partition(" ")
        try:
            if command == "/quit":
                return
            if command == "/reset":
                session.reset()
                write("(conversation reset)\n")
            elif command == "/system":
                session.set_system(argument.strip())
                write(f"(system prompt {'set' if argument.strip() else 'cleared'}; reset)\n")
            elif command == "/temperature":
                session.set_temperature(argument.strip())
                write(f"(temperature {session.temperature})\n")
            elif command.startswith("/"):
                write(f"unknown command {command}; {HELP}\n")
            else:
                forgotten = session.make_room(line)
                if forgotten:
                    write(
                        f"(forgot the oldest {forgotten} exchange{'s' * (forgotten > 1)} to fit "
                        f"the model's {session.loaded.model_config.max_seq_len}-token context)\n"
                    )
                write("assistant> ")
                session.reply(line, write)
                write("\n")
        except (ConfigError, DataError) as error:
            # E.g. an imported model's own template refusing a system message: the turn is
            # not kept and the conversation goes on (/system with no text clears it).
            write(f"error: {error}\n")
