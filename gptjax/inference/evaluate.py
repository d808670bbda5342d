"""`gptjax eval`: held-out text and conversation metrics of one or more trained models.

Text: perplexity and next-token accuracy over packed rows of held-out documents.
Conversations: answer-token loss and accuracy with teacher forcing (the same loss mask SFT
trains with), then greedy generation of each final assistant turn, scored against the
reference with corpus BLEU (sacrebleu-compatible) and exact match.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import numpy as np

from gptjax import sharding
from gptjax.chat_template import end_of_turn_id, render
from gptjax.errors import ConfigError, DataError
from gptjax.generation import generate
from gptjax.inference.bleu import corpus_bleu, exact_match
from gptjax.inference.load import LoadedModel
from gptjax.metrics import ProgressBar
from gptjax.steps import TEXT_SUMS, average_sums, lm_objective, make_eval_step
from gptjax.tokenizer.text_lengths import text_lengths


def _check_batch(loaded: LoadedModel, batch_size: int) -> None:
    shards = sharding.data_parallel_size(dict(loaded.mesh.shape))
    if batch_size <= 0 or batch_size % shards:
        raise ConfigError(
            f"--batch-size={batch_size} must be a positive multiple of the mesh's "
            f"data x fsdp = {shards} devices"
        )


def teacher_forced(
    loaded: LoadedModel, batches: Sequence[dict], *, markers_are_text: bool
) -> dict[str, float]:
    """Loss (nats/token, bits/byte, nats/char), perplexity and accuracy over fixed-shape
    batches (weights pick the scored tokens), and how many tokens, bytes and characters
    were scored. `markers_are_text`: plain text, not chat-template rows
    (gptjax.tokenizer.text_lengths)."""
    lengths = text_lengths(loaded.tokenizer, markers_are_text=markers_are_text)
    objective = functools.partial(lm_objective, lengths=lengths)
    step = jax.jit(make_eval_step(loaded.graphdef, objective))
    totals: dict[str, float] = {}
    with loaded.activated():
        for batch in batches:
            out = step(loaded.params, sharding.global_batch_from_local(batch, loaded.mesh))
            for name, value in out.items():
                totals[name] = totals.get(name, 0.0) + float(value)
    if totals["weight"] == 0:
        raise DataError("nothing to evaluate: the held-out set has no scored tokens")
    loss_sum = totals.pop("loss")
    result = {name: float(value) for name, value in average_sums(loss_sum, totals, np).items()}
    return result | {
        "perplexity": math.exp(min(result["loss"], 50.0)),
        "tokens": int(totals["weight"]),
        **{name: int(totals[name]) for name in TEXT_SUMS},
    }


def text_metrics(
    loaded: LoadedModel,
    documents: Sequence[str],
    *,
    seq_len: int,
    batch_size: int,
    max_batches: int | None,
) -> dict[str, float]:
    """Perplexity and token accuracy on documents, packed `[bos] doc [eos]` into rows."""
    from gptjax.data.pipeline import eval_batches
    from gptjax.data.token_rows import TokenRows, encode_documents

    _check_batch(loaded, batch_size)
    if not 0 < seq_len <= loaded.model_config.max_seq_len:
        raise ConfigError(
            f"--seq-len={seq_len} must be in (0, the model's context "
            f"{loaded.model_config.max_seq_len}]"
        )
    tok = loaded.tokenizer
    rows = TokenRows(
        encode_documents(documents, tok), seq_len=seq_len, bos_id=tok.bos_id, pad_id=tok.pad_id
    )
    batches = eval_batches(rows, batch_size=batch_size, max_batches=max_batches)
    return teacher_forced(loaded, batches, markers_are_text=True)


def answer_prompts(loaded: LoadedModel, conversations: Sequence[list[dict]]):
    """(prompt ids, reference text) per conversation: all turns but the last, then the header."""
    prompts, references = [], []
    for index, messages in enumerate(conversations):
        if messages[-1]["role"] != "assistant":
            raise DataError(
                f"conversation {index}: the last message must be the assistant's reference "
                f"answer, got role {messages[-1]['role']!r}"
            )
        ids, _ = render(loaded.tokenizer, messages[:-1], add_generation_prompt=True)
        prompts.append(ids)
        references.append(messages[-1]["content"])
    return prompts, references


def loops(items: Sequence, n: int = 3, times: int = 3) -> bool:
    """Whether some n-gram of `items` (token ids, or words) occurs `times` or more times: an
    answer that went round in circles (a greedy small model's usual failure)."""
    counts: dict[tuple, int] = {}
    for i in range(len(items) - n + 1):
        gram = tuple(items[i : i + n])
        counts[gram] = counts.get(gram, 0) + 1
        if counts[gram] >= times:
            return True
    return False


def generation_metrics(
    loaded: LoadedModel,
    conversations: Sequence[list[dict]],
    *,
    batch_size: int,
    max_new_tokens: int,
    show_progress: bool = True,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> dict:
    """Greedy answers to each conversation's last user turn, scored by BLEU and exact match,
    with the fractions that loop (a token 3-gram three times) and that run out of budget.

    A prompt that leaves no room in the context for an answer is reported in `too_long`,
    not scored. Returns the metrics and the (question, reference, answer) triples.
    """
    prompts, references = answer_prompts(loaded, conversations)
    context = loaded.model_config.max_seq_len
    fits = [i for i, p in enumerate(prompts) if len(p) < context]
    stops = (end_of_turn_id(loaded.tokenizer), loaded.tokenizer.eos_id)
    answers: dict[int, str] = {}
    cut = looping = 0  # answers that ran into the budget / said a token 3-gram three times
    bar = ProgressBar(len(fits), desc="generate", unit="answer", enabled=show_progress)
    with loaded.activated():
        for start in range(0, len(fits), batch_size):
            chunk = fits[start : start + batch_size]
            longest = max(len(prompts[i]) for i in chunk)
            # The last chunk is filled up with copies so every call has one (compiled) shape.
            batch = [prompts[i] for i in chunk] + [prompts[chunk[-1]]] * (batch_size - len(chunk))
            budget = min(max_new_tokens, context - longest)
            outputs = generate(
                loaded.graphdef,
                loaded.params,
                batch,
                max_new_tokens=budget,
                stop_ids=stops,
                repetition_penalty=repetition_penalty,
                no_repeat_ngram_size=no_repeat_ngram_size,
            )
            for i, ids in zip(chunk, outputs[: len(chunk)], strict=True):
                answers[i] = loaded.tokenizer.decode(ids)
                cut += len(ids) == budget
                looping += loops(ids)
            bar.update(start + len(chunk))
    bar.close()
    hyps = [answers[i] for i in fits]
    refs = [references[i] for i in fits]
    return {
        "bleu": corpus_bleu(hyps, refs) if fits else 0.0,
        "exact_match": exact_match(hyps, refs),
        "looping": looping / len(fits) if fits else 0.0,
        "cut_at_budget": cut / len(fits) if fits else 0.0,
        "generated": len(fits),
        "too_long": len(prompts) - len(fits),
        # (question, reference, answer): the question is the last user turn's text.
        "examples": [(conversations[i][-2]["content"], references[i], answers[i]) for i in fits],
    }


def conversation_metrics(
    loaded: LoadedModel,
    conversations: Sequence[list[dict]],
    *,
    batch_size: int,
    max_batches: int | None,
    max_generate: int,
    max_new_tokens: int,
    show_progress: bool = True,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> dict:
    """Answer-token loss/accuracy over all conversations, generation metrics on the first
    `max_generate` of them."""
    from gptjax.data.conversations import pack_conversations
    from gptjax.data.pipeline import eval_batches

    _check_batch(loaded, batch_size)
    packed = pack_conversations(conversations, loaded.tokenizer, loaded.model_config.max_seq_len)
    forced = teacher_forced(
        loaded,
        eval_batches(packed, batch_size=batch_size, max_batches=max_batches),
        markers_are_text=False,
    )
    generated = generation_metrics(
        loaded,
        conversations[:max_generate],
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        show_progress=show_progress,
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
    )
    return {
        "answer_loss": forced["loss"],
        "answer_bits_per_byte": forced["bits_per_byte"],
        "answer_accuracy": forced["accuracy"],
        "answer_tokens": forced["tokens"],
        "packing": packed.describe(),
        **generated,
    }


def side_by_side(names: Sequence[str], results: Sequence[dict], rows: Sequence[tuple]) -> str:
    """A plain-text table: one column per model, one row per (label, key, format)."""
    width = max(28, *(len(n) + 2 for n in names))
    lines = [f"{'':30s}" + "".join(f"{n:>{width}s}" for n in names)]
    for label, key, fmt in rows:
        if all(key in r for r in results):
            cells = "".join(f"{format(r[key], fmt):>{width}s}" for r in results)
            lines.append(f"{label:30s}{cells}")
    return "\n".join(lines)
