"""`gptjax chat`'s session: a conversation longer than the context forgets its oldest
exchanges (with a note) instead of refusing the next question; a message that alone fills
the context is still refused. On tests/fixtures/checkpoint_v0_1 (a 32-token context)."""

from pathlib import Path

import pytest

from gptjax.chat_template import render
from gptjax.inference.chat import ChatSession, ContextFull, run_chat
from gptjax.inference.load import load_model

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "checkpoint_v0_1"


@pytest.fixture(scope="module")
def loaded():
    return load_model(FIXTURE)


def test_a_long_conversation_forgets_its_oldest_exchanges_and_says_so(loaded):
    session = ChatSession(loaded, temperature=0.0, max_new_tokens=8)
    lines = iter(["Hi", "json", "Hello there", "What is this?", "/quit"])
    out: list[str] = []
    run_chat(session, lambda _: next(lines), out.append)
    transcript = "".join(out)
    assert transcript.count("assistant> ") == 4 and "error:" not in transcript
    assert "(forgot the oldest " in transcript and "32-token context)" in transcript
    assert session.messages[-2] == {"role": "user", "content": "What is this?"}
    # Before the next reply, what is kept leaves it min(max_new_tokens, context / 2) = 8 tokens.
    assert session.make_room("Hi") >= 1
    kept = [*session.messages, {"role": "user", "content": "Hi"}]
    assert len(render(loaded.tokenizer, kept, add_generation_prompt=True)[0]) + 8 <= 32


def test_a_message_that_alone_fills_the_context_is_refused_and_not_kept(loaded):
    session = ChatSession(loaded, temperature=0.0, max_new_tokens=8)
    session.reply("Hi", lambda _: None)
    before = list(session.messages)
    with pytest.raises(ContextFull, match="the model's context is 32: shorten it"):
        session.reply("The json module " * 10, lambda _: None)
    assert session.messages == before
