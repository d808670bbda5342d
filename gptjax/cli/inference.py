"""`gptjax sample` and `gptjax chat`: their flags and their bodies (eval: cli/evaluate.py)."""

from __future__ import annotations

import argparse
import sys

from gptjax.errors import ConfigError, DataError
from gptjax.paths import as_path


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    parser.add_argument(
        "--mesh",
        help="device mesh for the parameters, e.g. data=1,tensor=-1 (default data=-1: every "
        "device holds the whole model)",
    )


def add_repetition_args(parser: argparse.ArgumentParser, *, penalty: float, ngram: int):
    parser.add_argument(
        "--repetition-penalty",
        type=float,
        default=penalty,
        help="divide the positive logits of tokens already in the text (prompt included) by "
        f"this, multiply the negative ones (HF/CTRL; > 1 discourages repeats, 1 = off; {penalty})",
    )
    parser.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        default=ngram,
        help=f"never produce an n-gram of this many tokens twice (HF; 0 = off; {ngram})",
    )


def check_repetition(args) -> None:
    if not 0 < args.repetition_penalty < float("inf"):
        raise ConfigError(
            f"--repetition-penalty must be > 0 (1 = off), got {args.repetition_penalty}"
        )
    if args.no_repeat_ngram_size < 0:
        raise ConfigError(
            f"--no-repeat-ngram-size must be >= 0 (0 = off), got {args.no_repeat_ngram_size}"
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
        "message through its chat template (gptjax's, or the one an imported Hugging Face "
        "model brought), a pretrained model continues the text.",
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
    add_model_args(sample)
    _add_sampling_args(sample, temperature=0.8, top_p=1.0)
    add_repetition_args(sample, penalty=1.0, ngram=0)
    sample.set_defaults(run=_sample)

    chat = verbs.add_parser(
        "chat",
        help="talk to a trained chat model in the terminal",
        description="Interactive chat; the history is kept and sent through the model's chat "
        "template (gptjax's, or an imported model's own) every turn. Commands: /reset, "
        "/system TEXT, /temperature X, /quit.",
    )
    chat.add_argument("workdir", help="a workdir (or WORKDIR/checkpoints/STEP)")
    chat.add_argument("--system", help="system prompt")
    add_model_args(chat)
    _add_sampling_args(chat, temperature=0.7, top_p=0.9)
    # A small model's greedy answers loop; no 3-gram twice keeps them moving (README "Generation").
    add_repetition_args(chat, penalty=1.0, ngram=3)
    chat.set_defaults(run=_chat)


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
    check_repetition(args)


def load(path: str, args):
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
    loaded = load(args.workdir, args)
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
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
    )
    chat = uses_chat(loaded, args.template)
    for prompt, completion in zip(prompts, completions, strict=True):
        print(format_completion(prompt, completion, chat=chat))


def _chat(args) -> None:
    from gptjax.inference.chat import ChatSession, run_chat

    _check_sampling(args)
    loaded = load(args.workdir, args)
    session = ChatSession(
        loaded,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        system=args.system,
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
    )
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())
    run_chat(session, input, _write, echo=not interactive)
