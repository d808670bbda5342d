"""`gptjax eval`: its flags and its body. Every phase's checkpoint is scored the same way."""

from __future__ import annotations

import argparse
import json
import sys

from gptjax.cli.inference import add_model_args, add_repetition_args, check_repetition, load
from gptjax.errors import ConfigError, DataError
from gptjax.paths import as_path


def add_parsers(verbs) -> None:
    evaluate = verbs.add_parser(
        "eval",
        help="perplexity, answer loss, BLEU, repetition and preference accuracy of models",
        description="Evaluate one or more workdirs side by side on text (--text), "
        "conversations (--conversations) and preference pairs (--preferences); by default "
        "the built-in text and conversations. Each set is called held out for a model only "
        "when it is provably its run's validation split (rebuilt from the data config and "
        "data hash its checkpoint records); otherwise 'not known to be held out'.",
    )
    evaluate.add_argument("workdirs", nargs="+", help="workdirs (or WORKDIR/checkpoints/STEP)")
    _add_set_args(evaluate)
    evaluate.add_argument(
        "--template",
        choices=("auto", "chat", "raw"),
        default="auto",
        help="how conversations and pairs are put to a model: auto (the default) uses the chat "
        "template for sft/dpo checkpoints and raw text (turns one per line, answer, </s>) for "
        "pretrained ones, so each is scored in the format it was trained on",
    )
    evaluate.add_argument(
        "--reference",
        help="the reference model for DPO rewards (a workdir or WORKDIR/checkpoints/STEP); "
        "default: the reference a DPO checkpoint records (none for other phases)",
    )
    evaluate.add_argument(
        "--beta",
        type=float,
        help="β of the DPO rewards r = β·log(π/π_ref) (default: the checkpoint's dpo.beta)",
    )
    evaluate.add_argument("--batch-size", type=int, default=16, help="rows per batch (16)")
    evaluate.add_argument(
        "--max-batches", type=int, help="teacher-forced batches per set (default all)"
    )
    evaluate.add_argument(
        "--max-generate", type=int, default=200, help="answers generated for BLEU (200)"
    )
    evaluate.add_argument(
        "--max-new-tokens", type=int, default=64, help="token budget per answer (64)"
    )
    add_repetition_args(evaluate, penalty=1.0, ngram=0)
    evaluate.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    evaluate.add_argument("--show", type=int, default=3, help="example answers printed (3)")
    add_model_args(evaluate)
    evaluate.set_defaults(run=_evaluate)


def _add_set_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--text",
        action="append",
        help="builtin (the built-in corpus's validation documents), prepared:DIR (the "
        "validation split `gptjax prepare` held out in DIR) or a source spec as for `gptjax "
        "prepare` (text:GLOB, jsonl:GLOB, tfds:NAME; read whole); repeatable",
    )
    parser.add_argument(
        "--conversations",
        action="append",
        help="builtin (the built-in instruction set) or JSONL files/globs of {messages: "
        "[...]} or {prompt, response}; repeatable. Only each set's held-out part is used: the "
        "same hash split the SFT phase trains with (see --no-split)",
    )
    parser.add_argument(
        "--preferences",
        action="append",
        help="builtin or JSONL files/globs of {prompt|messages, chosen, rejected[, kind]} "
        "pairs: likelihood accuracy, and reward accuracy and margin against a reference; "
        "figures per kind when pairs carry one. Held-out part only, as for --conversations",
    )
    parser.add_argument(
        "--no-split",
        action="store_true",
        help="evaluate every conversation/pair of the files (a set never trained on)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.05,
        help="the held-out fraction the sets were split with in training (0.05)",
    )


_TABLE_ROWS = (
    ("text loss (nats/token)", "text_loss", ".3f"),
    ("text loss (bits/byte)", "text_bits_per_byte", ".4f"),
    ("text loss (nats/char)", "text_nats_per_char", ".4f"),
    ("text perplexity", "text_perplexity", ".2f"),
    ("text token accuracy", "text_accuracy", ".3f"),
    ("answer loss (nats/token)", "answer_loss", ".3f"),
    ("answer loss (bits/byte)", "answer_bits_per_byte", ".4f"),
    ("answer token accuracy", "answer_accuracy", ".3f"),
    ("BLEU (greedy answers)", "bleu", ".2f"),
    ("exact match", "exact_match", ".3f"),
    ("repetition (3-gram x3)", "repetition", ".3f"),
)


def _one_line(text: str, limit: int = 160) -> str:
    """An example answer on one line of the table: whitespace collapsed, long ones cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_args(args) -> None:
    from gptjax.inference.load import workdir_and_step

    for path in args.workdirs + ([args.reference] if args.reference else []):
        workdir_and_step(path)  # a slip in any of them, before the data is read
    if not 0 < args.validation_fraction < 1:
        raise ConfigError(
            f"--validation-fraction must be in (0, 1), got {args.validation_fraction}"
        )
    for name in ("max_generate", "max_new_tokens", "show"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0")
    check_repetition(args)
    if args.beta is not None and args.beta <= 0:
        raise ConfigError(f"--beta must be positive, got {args.beta}")


def _read_sets(args):
    from gptjax.inference import eval_sets

    asked = args.text or args.conversations or args.preferences
    text_specs = args.text or ([] if asked else ["builtin"])
    conversation_specs = args.conversations or ([] if asked else ["builtin"])
    fraction, split = args.validation_fraction, not args.no_split
    texts = eval_sets.text_sets(text_specs, fraction)
    conversations = (
        eval_sets.conversation_set(conversation_specs, fraction, split)
        if conversation_specs
        else []
    )
    if conversation_specs and not conversations:
        raise DataError(f"--conversations {conversation_specs}: no held-out conversations")
    pairs = eval_sets.preference_set(args.preferences, fraction, split) if args.preferences else []
    if args.preferences and not pairs:
        raise DataError(f"--preferences {args.preferences}: no held-out pairs")
    return texts, conversation_specs, conversations, pairs


def _evaluate(args) -> None:
    from gptjax.inference.heldout import small_set_warning

    _check_args(args)
    texts, conversation_specs, conversations, pairs = _read_sets(args)
    for count, noun in (
        (sum(t.count for t in texts), "documents"),
        (len(conversations), "conversations"),
        (len(pairs), "preference pairs"),
    ):
        if count and (warning := small_set_warning(count, noun)):
            print(warning, file=sys.stderr)
    names, results = [], []
    for path in args.workdirs:
        loaded = load(path, args)
        names.append(f"{loaded.workdir.name} ({loaded.phase} {loaded.step})")
        results.append(_score(loaded, args, texts, conversations, pairs))
    _report(args, names, results, texts, conversation_specs, conversations, pairs)


def _score(loaded, args, texts, conversations, pairs) -> dict:
    import numpy as np

    from gptjax.inference.complete import uses_chat
    from gptjax.inference.eval_sets import conversations_verdict, pairs_verdict
    from gptjax.inference.evaluate import conversation_metrics, text_metrics
    from gptjax.inference.heldout import run_split

    split = run_split(loaded.metadata, loaded.tokenizer)
    chat = uses_chat(loaded, args.template)
    result: dict = {
        "workdir": str(loaded.workdir),
        "step": loaded.step,
        "phase": loaded.phase,
        "template": "chat" if chat else "raw",
    }
    if texts:
        stream = np.concatenate([t.stream_for(loaded.tokenizer) for t in texts])
        text = text_metrics(
            loaded,
            stream,
            seq_len=loaded.model_config.max_seq_len,
            batch_size=args.batch_size,
            max_batches=args.max_batches,
        )
        result |= {f"text_{key}": value for key, value in text.items()}
        verdicts = [t.verdict(split) for t in texts]
        first_unknown = next((v for v in verdicts if not v.held_out), verdicts[0])
        result |= {"text_held_out": first_unknown.held_out, "text_note": first_unknown.note}
    if conversations:
        result |= conversation_metrics(
            loaded,
            conversations,
            batch_size=args.batch_size,
            max_batches=args.max_batches,
            max_generate=args.max_generate,
            max_new_tokens=args.max_new_tokens,
            chat=chat,
            repetition_penalty=args.repetition_penalty,
            no_repeat_ngram_size=args.no_repeat_ngram_size,
        )
        verdict = conversations_verdict(split, conversations)
        result |= {"conversations_held_out": verdict.held_out, "conversations_note": verdict.note}
    if pairs:
        result |= _preferences(loaded, args, pairs, chat)
        verdict = pairs_verdict(split, pairs)
        result |= {"preferences_held_out": verdict.held_out, "preferences_note": verdict.note}
    return result


def _preferences(loaded, args, pairs, chat: bool) -> dict:
    from gptjax.inference.preference_eval import preference_metrics

    reference, recorded = None, loaded.metadata.get("reference")
    if args.reference:
        reference = load(args.reference, argparse.Namespace(step=None, mesh=args.mesh))
    elif recorded:
        path = as_path(recorded["workdir"], "reference") / "checkpoints" / str(recorded["step"])
        if not path.is_dir():  # moved or deleted since the DPO run
            raise ConfigError(
                f"{loaded.workdir} records its DPO reference as {path}, which is gone; give "
                "--reference WORKDIR (the SFT model it started from)"
            )
        reference = load(str(path), argparse.Namespace(step=None, mesh=args.mesh))
    beta = args.beta or float(loaded.metadata["config"].get("dpo", {}).get("beta", 0.1))
    figures = preference_metrics(
        loaded, pairs, reference=reference, beta=beta, batch_size=args.batch_size, chat=chat
    )
    out = {
        "preferences": figures["by_kind"],
        "pairs_too_long": figures["too_long"],
        "reference": None if reference is None else f"{reference.workdir} step {reference.step}",
        "beta": beta,
    }
    for kind, values in figures["by_kind"].items():
        out |= {f"pairs_{kind}_{name}": value for name, value in values.items()}
    return out


def _preference_rows(results: list[dict]) -> list[tuple]:
    kinds = list(dict.fromkeys(k for r in results for k in r.get("preferences", {})))
    rows = []
    for kind in kinds:
        rows += [
            (f"pairs scored [{kind}]", f"pairs_{kind}_pairs", "d"),
            (f"likelihood accuracy [{kind}]", f"pairs_{kind}_likelihood_accuracy", ".3f"),
            (f"reward accuracy [{kind}]", f"pairs_{kind}_reward_accuracy", ".3f"),
            (f"reward margin [{kind}]", f"pairs_{kind}_reward_margin", ".3f"),
        ]
    return rows


def _held_out_lines(names, results, key: str) -> list[str]:
    return [f"  {name}: {result[key]}" for name, result in zip(names, results, strict=True)]


def _repetition_note(args) -> str:
    """How the greedy answers were kept from repeating, for the header line ("" when not)."""
    settings = []
    if args.repetition_penalty != 1.0:
        settings.append(f"repetition penalty {args.repetition_penalty:g}")
    if args.no_repeat_ngram_size:
        settings.append(f"no repeated {args.no_repeat_ngram_size}-gram")
    return f" ({', '.join(settings)})" if settings else ""


def _report(args, names, results, texts, conversation_specs, conversations, pairs) -> None:
    from gptjax.inference.evaluate import side_by_side

    first = results[0]
    if texts:
        print(
            f"text: {sum(t.count for t in texts):,} documents "
            f"({', '.join(t.spec for t in texts)}); scored {first['text_tokens']:,} tokens "
            f"spelling {first['text_bytes']:,} bytes"
        )
        print("\n".join(_held_out_lines(names, results, "text_note")))
    if conversations:
        print(
            f"conversations: {len(conversations)} ({', '.join(conversation_specs)}); answers "
            f"generated greedily{_repetition_note(args)} for {first['generated']}, "
            f"{first['too_long']} prompts too "
            "long for the context"
        )
        print("\n".join(_held_out_lines(names, results, "conversations_note")))
    if pairs:
        print(
            f"preference pairs: {len(pairs)} ({', '.join(args.preferences)}); "
            f"{first['pairs_too_long']} too long for the context, left out"
        )
        print("\n".join(_held_out_lines(names, results, "preferences_note")))
        for name, result in zip(names, results, strict=True):
            reference = result["reference"] or "none (reward accuracy needs --reference)"
            print(f"  {name}: reference {reference}, beta {result['beta']:g}")
    if conversations or pairs:
        formats = (f"{n}: {r['template']}" for n, r in zip(names, results, strict=True))
        print(f"format asked in (--template {args.template}): {', '.join(formats)}")
    print(side_by_side(names, results, (*_TABLE_ROWS, *_preference_rows(results))))
    for name, result in zip(names, results, strict=True):
        for reference, answer in result.get("examples", [])[: args.show]:
            print(f"[{name}] reference: {_one_line(reference)}")
            print(f"{' ' * (len(name) + 3)}answer:    {_one_line(answer)}")
    if args.json:
        as_path(args.json, "--json").write_text(
            json.dumps(results, indent=2) + "\n", encoding="utf-8"
        )
