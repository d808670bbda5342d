"""`gptjax eval --preferences`: how a model ranks chosen over rejected answers, any phase.

For each pair the summed log-probability of each answer (its tokens and the end of its turn,
as DPO trains on: gptjax.dpo.answer_logps) is read under the policy, and under a reference
model when there is one:

    likelihood accuracy  share of pairs where log π(chosen) > log π(rejected): the model's own
                         preference, defined for a base or SFT model too
    reward accuracy      share where the implicit reward r = β·(log π - log π_ref) of the
                         chosen answer beats the rejected one's (needs a reference)
    reward margin        mean r(chosen) - r(rejected)

Figures are given for all pairs and per `kind` when the pairs carry a "kind" string (pairs
without one count in "all" only). Pairs longer than the context are left out and counted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import jax
import numpy as np

from gptjax import sharding
from gptjax.data.conversations import json_object, read_jsonl_records
from gptjax.errors import ConfigError, DataError
from gptjax.inference.load import LoadedModel
from gptjax.metrics import ProgressBar

ALL = "all"


def _pair_with_kind(line: str, where: str) -> dict:
    from gptjax.data.preferences import _pair

    pair = _pair(line, where)
    kind = json_object(line, where).get("kind")
    if kind is not None and (not isinstance(kind, str) or not kind.strip()):
        raise DataError(f"{where}: kind must be a non-empty string, got {json.dumps(kind)}")
    if kind is not None:
        pair["kind"] = kind
    return pair


def read_tagged_preferences(paths: Sequence[str]) -> list[dict]:
    """`gptjax.data.preferences.read_preferences`, keeping each pair's optional "kind"."""
    return read_jsonl_records(paths, _pair_with_kind, "preferences", "preference pairs")


def _by_kind(pairs: Sequence[dict]) -> dict[str | None, list[dict]]:
    groups: dict[str | None, list[dict]] = {}
    for pair in pairs:
        kind = pair.get("kind")
        if kind == ALL:
            raise DataError(f"{pair.get('where', 'a pair')}: kind {ALL!r} names every pair")
        groups.setdefault(kind, []).append(pair)
    return groups


def _answer_logps(loaded: LoadedModel, batches: list[dict], bar: ProgressBar):
    """Per batch: (chosen, rejected, chosen tokens, rejected tokens) sums, [B, L] numpy."""
    from gptjax.dpo import answer_logps

    fn = jax.jit(lambda params, batch: answer_logps(loaded.graphdef, params, batch))
    out = []
    with loaded.activated():
        for batch in batches:
            sums = fn(loaded.params, sharding.global_batch_from_local(batch, loaded.mesh))
            out.append(tuple(np.asarray(jax.device_get(x), np.float64) for x in sums))
            bar.update(bar.step + 1)
    return out


def _sums(policy, reference, beta: float) -> dict[str, float]:
    sums = dict.fromkeys(("pairs", "likelihood_accuracy", "reward_accuracy", "reward_margin"), 0.0)
    for i, (pw, pl, tw, tl) in enumerate(policy):
        pair = (tw > 0) & (tl > 0)
        sums["pairs"] += float(pair.sum())
        sums["likelihood_accuracy"] += float(((pw > pl) & pair).sum())
        if reference is not None:
            rw, rl = reference[i][:2]
            margin = beta * ((pw - rw) - (pl - rl))
            sums["reward_accuracy"] += float(((margin > 0) & pair).sum())
            sums["reward_margin"] += float(np.where(pair, margin, 0.0).sum())
    return sums


def preference_metrics(
    policy: LoadedModel,
    pairs: Sequence[dict],
    *,
    reference: LoadedModel | None,
    beta: float,
    batch_size: int,
    chat: bool,
    show_progress: bool = True,
) -> dict:
    """{kind: {pairs, likelihood_accuracy[, reward_accuracy, reward_margin]}} with kind "all"
    over every pair, plus `too_long` (pairs left out)."""
    from gptjax.data.pipeline import eval_batches
    from gptjax.data.preferences import pack_preferences
    from gptjax.inference.evaluate import check_batch

    check_batch(policy, batch_size)
    if reference is not None and reference.tokenizer.sha256 != policy.tokenizer.sha256:
        raise ConfigError(
            f"the reference {reference.workdir} has another tokenizer than {policy.workdir}; "
            "a reward compares the same answer tokens under both: give --reference a model "
            "with the same tokenizer"
        )
    seq_len = policy.model_config.max_seq_len
    if reference is not None:
        seq_len = min(seq_len, reference.model_config.max_seq_len)
    encode = policy.chat_format.pair_ids if chat else raw_pair_ids
    packed = {
        kind: pack_preferences(group, policy.tokenizer, seq_len, encode=encode)
        for kind, group in _by_kind(pairs).items()
    }
    batches = {k: eval_batches(p, batch_size=batch_size) for k, p in packed.items()}
    total = sum(map(len, batches.values())) * (1 + (reference is not None))
    bar = ProgressBar(total, desc="score pairs", unit="batch", enabled=show_progress)
    result: dict = {}
    for kind, kind_batches in batches.items():
        ref = None if reference is None else _answer_logps(reference, kind_batches, bar)
        result[kind] = _sums(_answer_logps(policy, kind_batches, bar), ref, beta)
    bar.close()
    everything = {
        name: sum(r[name] for r in result.values()) for name in result[next(iter(result))]
    }
    figures = {ALL: everything} | {k: v for k, v in result.items() if k is not None}
    keep = ("likelihood_accuracy",) + (("reward_accuracy", "reward_margin") if reference else ())
    return {
        "by_kind": {
            kind: {"pairs": int(s["pairs"])}
            | {name: s[name] / max(s["pairs"], 1.0) for name in keep}
            for kind, s in figures.items()
        },
        "too_long": sum(len(p.too_long) for p in packed.values()),
    }


def raw_pair_ids(pair: dict, tokenizer) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen, rejected) ids in the raw-text format (gptjax.raw_template)."""
    from gptjax.raw_template import raw_answer, raw_prompt

    return (
        raw_prompt(tokenizer, pair["messages"]),
        raw_answer(tokenizer, pair["chosen"]),
        raw_answer(tokenizer, pair["rejected"]),
    )
