"""The bodies of `gptjax sample`, `gptjax chat` and `gptjax eval` (flags parsed in cli.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gptjax.errors import ConfigError, DataError
from gptjax.inference import format_completion, load_model, parse_mesh, prompt_ids


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
    loaded = load_model(path, step=args.step, mesh=parse_mesh(args.mesh))
    print(f"loaded {loaded.describe()}", file=sys.stderr)
    return loaded


def sample(args) -> None:
    from gptjax.generate import generate

    _check_sampling(args)
    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise DataError(f"--prompts-file {path} does not exist")
        prompts += [line for line in path.read_text(encoding="utf-8").splitlines() if line]
    if not prompts:
        raise ConfigError("give at least one --prompt TEXT or a --prompts-file")
    loaded = _load(args.workdir, args)
    tok = loaded.tokenizer
    chat = args.template == "chat" or (args.template == "auto" and loaded.is_chat)
    ids, stops = prompt_ids(tok, prompts, chat=chat)
    with loaded.activated():
        outputs = generate(
            loaded.graphdef,
            loaded.params,
            ids,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            stop_ids=stops,
        )
    for prompt, out in zip(prompts, outputs, strict=True):
        print(format_completion(prompt, tok.decode(out), chat=chat))


def chat(args) -> None:
    from gptjax.chat import ChatSession, run_chat

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
        from_files = read_conversations(files)
        conversations += split_conversations(from_files, fraction)[1] if split else from_files
    return conversations


_TABLE_ROWS = (
    ("text loss (nats/token)", "text_loss", ".3f"),
    ("text perplexity", "text_perplexity", ".2f"),
    ("text token accuracy", "text_accuracy", ".3f"),
    ("answer loss (nats/token)", "answer_loss", ".3f"),
    ("answer token accuracy", "answer_accuracy", ".3f"),
    ("BLEU (greedy answers)", "bleu", ".2f"),
    ("exact match", "exact_match", ".3f"),
)


def _one_line(text: str, limit: int = 160) -> str:
    """An example answer on one line of the table: whitespace collapsed, long ones cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def evaluate(args) -> None:
    from gptjax.evaluate import conversation_metrics, side_by_side, text_metrics

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
        print(f"held-out text: {len(documents)} documents ({', '.join(text_specs)})")
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
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
