"""`gptjax eval`: held-out text and conversation metrics of one or more trained models.

Text: perplexity and next-token accuracy over packed rows of held-out documents.
Conversations: answer-token loss and accuracy with teacher forcing (the same loss mask SFT
trains with), then greedy generation of each final assistant turn, scored against the
reference with corpus BLEU (sacrebleu-compatible), exact match and the share of answers that
loop (gptjax.inference.repetition). A chat model is asked in its own chat format
(gptjax.chat_format: gptjax's template, or an imported model's). `chat=False` asks in the
raw-text format a base model was trained on (gptjax.raw_template) instead.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import numpy as np

from gptjax import sharding
from gptjax.chat_template import completion_text
from gptjax.errors import ConfigError, DataError
from gptjax.generation import generate
from gptjax.inference.bleu import corpus_bleu, exact_match
from gptjax.inference.load import LoadedModel
from gptjax.inference.repetition import repetition_rate
from gptjax.metrics import ProgressBar
from gptjax.steps import TEXT_SUMS, average_sums, lm_objective, make_eval_step
from gptjax.tokenizer.text_lengths import text_lengths


def check_batch(loaded: LoadedModel, batch_size: int) -> None:
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
    stream: np.ndarray,
    *,
    seq_len: int,
    batch_size: int,
    max_batches: int | None,
) -> dict[str, float]:
    """Perplexity and token accuracy on a `[bos] doc [eos] ...` token stream of the model's
    tokenizer (`gptjax.data.token_rows.encode_documents`), cut into rows."""
    from gptjax.data.pipeline import eval_batches
    from gptjax.data.token_rows import TokenRows

    check_batch(loaded, batch_size)
    if not 0 < seq_len <= loaded.model_config.max_seq_len:
        raise ConfigError(
            f"--seq-len={seq_len} must be in (0, the model's context "
            f"{loaded.model_config.max_seq_len}]"
        )
    tok = loaded.tokenizer
    rows = TokenRows(stream, seq_len=seq_len, bos_id=tok.bos_id, pad_id=tok.pad_id)
    batches = eval_batches(rows, batch_size=batch_size, max_batches=max_batches)
    return teacher_forced(loaded, batches, markers_are_text=True)


def answer_prompts(loaded: LoadedModel, conversations: Sequence[list[dict]], chat: bool = True):
    """(prompt ids, reference text) per conversation: all turns but the last, then the header
    (in the raw format: their text, one line each)."""
    from gptjax.raw_template import raw_prompt

    prompts, references = [], []
    for index, messages in enumerate(conversations):
        if messages[-1]["role"] != "assistant":
            raise DataError(
                f"conversation {index}: the last message must be the assistant's reference "
                f"answer, got role {messages[-1]['role']!r}"
            )
        if chat:
            ids = loaded.chat_format.prompt(loaded.tokenizer, messages[:-1])
        else:
            ids = raw_prompt(loaded.tokenizer, messages[:-1])
        prompts.append(ids)
        references.append(messages[-1]["content"])
    return prompts, references


def generation_metrics(
    loaded: LoadedModel,
    conversations: Sequence[list[dict]],
    *,
    batch_size: int,
    max_new_tokens: int,
    chat: bool = True,
    show_progress: bool = True,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> dict:
    """Greedy answers to each conversation's last user turn, scored by BLEU, exact match and
    repetition.

    A prompt that leaves no room in the context for an answer is reported in `too_long`,
    not scored. Returns the metrics and the (reference, answer) pairs.
    """
    prompts, references = answer_prompts(loaded, conversations, chat)
    context = loaded.model_config.max_seq_len
    fits = [i for i, p in enumerate(prompts) if len(p) < context]
    tok = loaded.tokenizer
    stops = loaded.chat_format.stop_ids(tok) if chat else (tok.eos_id,)
    answers: dict[int, str] = {}
    answer_ids: dict[int, list[int]] = {}
    bar = ProgressBar(len(fits), desc="generate", unit="answer", enabled=show_progress)
    with loaded.activated():
        for start in range(0, len(fits), batch_size):
            chunk = fits[start : start + batch_size]
            longest = max(len(prompts[i]) for i in chunk)
            # The last chunk is filled up with copies so every call has one (compiled) shape.
            batch = [prompts[i] for i in chunk] + [prompts[chunk[-1]]] * (batch_size - len(chunk))
            outputs = generate(
                loaded.graphdef,
                loaded.params,
                batch,
                max_new_tokens=min(max_new_tokens, context - longest),
                stop_ids=stops,
                repetition_penalty=repetition_penalty,
                no_repeat_ngram_size=no_repeat_ngram_size,
            )
            for i, ids in zip(chunk, outputs[: len(chunk)], strict=True):
                answers[i] = completion_text(tok, prompts[i], list(ids), chat=chat)
                answer_ids[i] = list(ids)
            bar.update(start + len(chunk))
    bar.close()
    hyps = [answers[i] for i in fits]
    refs = [references[i] for i in fits]
    return {
        "bleu": corpus_bleu(hyps, refs) if fits else 0.0,
        "exact_match": exact_match(hyps, refs),
        "repetition": repetition_rate([answer_ids[i] for i in fits]),
        "generated": len(fits),
        "too_long": len(prompts) - len(fits),
        "examples": list(zip(refs, hyps, strict=True)),
    }


def conversation_metrics(
    loaded: LoadedModel,
    conversations: Sequence[list[dict]],
    *,
    batch_size: int,
    max_batches: int | None,
    max_generate: int,
    max_new_tokens: int,
    chat: bool = True,
    show_progress: bool = True,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> dict:
    """Answer-token loss/accuracy over all conversations, generation metrics on the first
    `max_generate` of them; `chat=False` in the raw-text format."""
    from gptjax.data.conversations import pack_conversations
    from gptjax.data.pipeline import eval_batches
    from gptjax.raw_template import render_raw

    check_batch(loaded, batch_size)
    packed = pack_conversations(
        conversations,
        loaded.tokenizer,
        loaded.model_config.max_seq_len,
        render_fn=loaded.chat_format.render if chat else render_raw,
    )
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
        chat=chat,
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
    """A plain-text table: one column per model, one row per (label, key, format); a model
    without that figure (a reward with no reference model) shows "-"."""
    width = max(28, *(len(n) + 2 for n in names))
    lines = [f"{'':30s}" + "".join(f"{n:>{width}s}" for n in names)]
    for label, key, fmt in rows:
        if any(key in r for r in results):
            cells = "".join(
                f"{format(r[key], fmt) if key in r else '-':>{width}s}" for r in results
            )
            lines.append(f"{label:30s}{cells}")
    return "\n".join(lines)
