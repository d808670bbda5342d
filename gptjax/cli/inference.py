"""`gptjax sample`, `gptjax chat` and `gptjax eval`: their flags and their bodies."""

from __future__ import annotations

import argparse
import json
import sys

from gptjax.errors import ConfigError, DataError
from gptjax.paths import as_path


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    parser.add_argument(
        "--mesh",
        help="device mesh for the parameters, e.g. data=1,tensor=-1 (default data=-1: every "
        "device holds the whole model)",
    )


def _add_sampling_args(parser: argparse.ArgumentParser, *, temperature: float, top_p: float):
    parser.add_argument("--max-new-tokens", type=int, default=128, help="token budget (128)")
    parser.add_argument(
        "--temperature", type=float, default=temperature, help=f"0 = greedy ({temperature})"
    )
    parser.add_argument("--top-k", type=int, default=0, help="keep the k likeliest (0 = off)")
    parser.add_argument(
        "--top-p", type=float, default=top_p, help=f"nucleus sampling mass (1 = off; {top_p})"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (0)")


def add_parsers(verbs) -> None:
    sample = verbs.add_parser(
        "sample",
        help="complete prompts with a trained model",
        description="Complete each prompt; a chat model (phase sft/dpo) answers it as a user "
        "message through the chat template, a pretrained model continues the text.",
    )
    sample.add_argument("workdir", help="a workdir (or WORKDIR/checkpoints/STEP)")
    sample.add_argument("--prompt", action="append", default=[], help="a prompt; repeatable")
    sample.add_argument("--prompts-file", help="a file with one prompt per line")
    sample.add_argument(
        "--template",
        choices=("auto", "chat", "raw"),
        default="auto",
        help="auto: chat for sft/dpo checkpoints, raw text continuation otherwise",
    )
    _add_model_args(sample)
    _add_sampling_args(sample, temperature=0.8, top_p=1.0)
    sample.set_defaults(run=_sample)

    chat = verbs.add_parser(
        "chat",
        help="talk to a trained chat model in the terminal",
        description="Interactive chat; the history is kept and sent through the chat "
        "template every turn. Commands: /reset, /system TEXT, /temperature X, /quit.",
    )
    chat.add_argument("workdir", help="a workdir (or WORKDIR/checkpoints/STEP)")
    chat.add_argument("--system", help="system prompt")
    _add_model_args(chat)
    _add_sampling_args(chat, temperature=0.7, top_p=0.9)
    chat.set_defaults(run=_chat)

    evaluate = verbs.add_parser(
        "eval",
        help="held-out perplexity, answer loss, BLEU and exact match of trained models",
        description="Evaluate one or more workdirs side by side on held-out text (--text) "
        "and/or conversations (--conversations); by default both built-in held-out sets.",
    )
    evaluate.add_argument("workdirs", nargs="+", help="workdirs (or WORKDIR/checkpoints/STEP)")
    evaluate.add_argument(
        "--text",
        action="append",
        help="held-out text: builtin (the built-in corpus's validation documents) or a "
        "source spec as for `gptjax prepare` (text:GLOB, jsonl:GLOB, tfds:NAME); repeatable",
    )
    evaluate.add_argument(
        "--conversations",
        action="append",
        help="builtin (the built-in instruction set) or JSONL files/globs of {messages: "
        "[...]} or {prompt, response}; repeatable. Only each set's held-out part is used: the "
        "same hash split the SFT phase trains with (see --no-split)",
    )
    evaluate.add_argument(
        "--no-split",
        action="store_true",
        help="evaluate every conversation of the --conversations files (a set never trained on)",
    )
    evaluate.add_argument(
        "--validation-fraction",
        type=float,
        default=0.05,
        help="the held-out fraction the sets were split with in training (0.05)",
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
    evaluate.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    evaluate.add_argument("--show", type=int, default=3, help="example answers printed (3)")
    _add_model_args(evaluate)
    evaluate.set_defaults(run=_evaluate)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _check_sampling(args) -> None:
    if args.max_new_tokens <= 0:
        raise ConfigError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ConfigError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_k < 0:
        raise ConfigError(f"--top-k must be >= 0 (0 = off), got {args.top_k}")
    if not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1] (1 = off), got {args.top_p}")


def _load(path: str, args):
    from gptjax.inference.load import load_model, parse_mesh

    loaded = load_model(path, step=args.step, mesh=parse_mesh(args.mesh))
    print(f"loaded {loaded.describe()}", file=sys.stderr)
    return loaded


def _prompt_lines(path) -> list[str]:
    """The non-empty lines of a --prompts-file; DataError for a file that is not UTF-8 text."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"--prompts-file {path} cannot be read: {error.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"--prompts-file {path}:{line}: not UTF-8 text ({error.reason} at byte "
            f"{error.start}); give a text file with one prompt per line"
        ) from None
    if "\0" in text:  # UTF-8 decodes NUL bytes, but no prompt holds one: a binary file
        raise DataError(
            f"--prompts-file {path} holds NUL bytes, so it is not a text file; give a text "
            "file with one prompt per line"
        )
    return [line for line in text.splitlines() if line]


def _sample(args) -> None:
    from gptjax.chat_template import format_completion
    from gptjax.inference.complete import complete, uses_chat

    _check_sampling(args)
    prompts = list(args.prompt)
    if args.prompts_file:
        path = as_path(args.prompts_file, "--prompts-file")
        if not path.is_file():
            raise DataError(f"--prompts-file {path} does not exist")
        prompts += _prompt_lines(path)
    if not prompts:
        raise ConfigError("give at least one --prompt TEXT or a --prompts-file")
    loaded = _load(args.workdir, args)
    completions = complete(
        loaded,
        prompts,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        template=args.template,
        log=lambda line: print(line, file=sys.stderr),
        budget_name="--max-new-tokens",
    )
    chat = uses_chat(loaded, args.template)
    for prompt, completion in zip(prompts, completions, strict=True):
        print(format_completion(prompt, completion, chat=chat))


def _chat(args) -> None:
    from gptjax.inference.chat import ChatSession, run_chat

    _check_sampling(args)
    loaded = _load(args.workdir, args)
    session = ChatSession(
        loaded,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        system=args.system,
    )
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())
    run_chat(session, input, _write, echo=not interactive)


def _heldout_text(specs: list[str], fraction: float) -> list[str]:
    from gptjax.data.corpus import builtin_documents, split_documents
    from gptjax.data.sources import SourceStats, parse_sources

    documents: list[str] = []
    for spec in specs:
        if spec == "builtin":
            documents += split_documents(builtin_documents(), fraction)[1]
        else:
            for source in parse_sources([spec]):
                documents += list(source.documents(SourceStats()))
    return documents


def _heldout_conversations(specs: list[str], fraction: float, split: bool) -> list[list[dict]]:
    """The held-out side of each set, by the same hash split the SFT phase trains with (files
    are taken whole when `split` is False: a set that was never trained on)."""
    from gptjax.data.conversations import (
        builtin_conversations,
        read_conversations,
        split_conversations,
    )

    files = [spec for spec in specs if spec != "builtin"]
    conversations: list[list[dict]] = []
    if "builtin" in specs:
        conversations += split_conversations(builtin_conversations(), fraction)[1]
    if files:
        from_files = read_conversations(files, log=lambda line: print(line, file=sys.stderr))
        conversations += split_conversations(from_files, fraction)[1] if split else from_files
    return conversations


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
)


def _one_line(text: str, limit: int = 160) -> str:
    """An example answer on one line of the table: whitespace collapsed, long ones cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _evaluate(args) -> None:
    from gptjax.inference.evaluate import conversation_metrics, side_by_side, text_metrics
    from gptjax.inference.load import workdir_and_step

    for path in args.workdirs:  # a slip in any of them, before the held-out data is read
        workdir_and_step(path)
    if not 0 < args.validation_fraction < 1:
        raise ConfigError(
            f"--validation-fraction must be in (0, 1), got {args.validation_fraction}"
        )
    for name in ("max_generate", "max_new_tokens", "show"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0")
    text_specs = args.text or ([] if args.conversations else ["builtin"])
    conversation_specs = args.conversations or ([] if args.text else ["builtin"])
    documents = _heldout_text(text_specs, args.validation_fraction) if text_specs else []
    conversations = (
        _heldout_conversations(conversation_specs, args.validation_fraction, not args.no_split)
        if conversation_specs
        else []
    )
    if text_specs and not documents:
        raise DataError(f"--text {text_specs}: no documents")
    if conversation_specs and not conversations:
        raise DataError(f"--conversations {conversation_specs}: no conversations")
    names, results = [], []
    for path in args.workdirs:
        loaded = _load(path, args)
        result: dict = {"workdir": str(loaded.workdir), "step": loaded.step, "phase": loaded.phase}
        if documents:
            text = text_metrics(
                loaded,
                documents,
                seq_len=loaded.model_config.max_seq_len,
                batch_size=args.batch_size,
                max_batches=args.max_batches,
            )
            result |= {f"text_{key}": value for key, value in text.items()}
        if conversations:
            result |= conversation_metrics(
                loaded,
                conversations,
                batch_size=args.batch_size,
                max_batches=args.max_batches,
                max_generate=args.max_generate,
                max_new_tokens=args.max_new_tokens,
            )
        names.append(f"{loaded.workdir.name} ({loaded.phase} {loaded.step})")
        results.append(result)
    if documents:
        first = results[0]
        print(
            f"held-out text: {len(documents)} documents ({', '.join(text_specs)}); scored "
            f"{first['text_tokens']:,} tokens spelling {first['text_bytes']:,} bytes"
        )
    if conversations:
        first = results[0]
        print(
            f"held-out conversations: {len(conversations)} ({', '.join(conversation_specs)}); "
            f"answers generated greedily for {first['generated']}, "
            f"{first['too_long']} prompts too long for the context"
        )
    print(side_by_side(names, results, _TABLE_ROWS))
    for name, result in zip(names, results, strict=True):
        for reference, answer in result.get("examples", [])[: args.show]:
            print(f"[{name}] reference: {_one_line(reference)}")
            print(f"{' ' * (len(name) + 3)}answer:    {_one_line(answer)}")
    if args.json:
        as_path(args.json, "--json").write_text(
            json.dumps(results, indent=2) + "\n", encoding="utf-8"
        )
