"""`gptjax tokenizer` and `gptjax prepare`: their flags and their bodies."""

from __future__ import annotations

import argparse
import sys

from gptjax.errors import ConfigError, DataError


def add_parsers(verbs) -> None:
    _add_tokenizer_parser(verbs)
    _add_prepare_parser(verbs)


_SOURCE_HELP = (
    "builtin | text:GLOB[,docs=file|blank_lines][,sep=STR] | jsonl:GLOB[,field=text] | "
    "tfds:NAME[,split=train][,field=text][,data_dir=DIR], each with optional ,weight=W "
    "and ,errors=strict|replace; repeat for a mixture"
)


def _add_source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", action="append", required=True, help=_SOURCE_HELP)
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.05,
        help="documents held out for validation, chosen by a hash of their text (0.05)",
    )


def _add_tokenizer_parser(verbs) -> None:
    tokenizer = verbs.add_parser("tokenizer", help="train a tokenizer, or encode/decode with one")
    actions = tokenizer.add_subparsers(dest="action", required=True)
    tokenizer.set_defaults(run=_tokenizer)
    train = actions.add_parser("train", help="train a sentencepiece tokenizer on sources")
    _add_source_args(train)
    train.add_argument("--out", required=True, help="directory for tokenizer.model/.json")
    train.add_argument("--vocab-size", type=int, required=True, help="pieces, e.g. 32768")
    train.add_argument("--type", default="bpe", choices=("bpe", "unigram", "char"))
    encode = actions.add_parser("encode", help="print the token ids of text (args or stdin)")
    encode.add_argument("--tokenizer", required=True, help="tokenizer dir or .model file")
    encode.add_argument("--pieces", action="store_true", help="print pieces, not ids")
    encode.add_argument("text", nargs="*", help="texts, one output line each (default: stdin)")
    decode = actions.add_parser("decode", help="print the text of token ids (args or stdin)")
    decode.add_argument("--tokenizer", required=True, help="tokenizer dir or .model file")
    decode.add_argument("ids", nargs="*", help="token ids (default: read from stdin)")


def _add_prepare_parser(verbs) -> None:
    prepare = verbs.add_parser(
        "prepare",
        help="tokenize sources into token shards + manifest for training",
        description="Tokenize sources once, on all cores, into DIR (shards, tokenizer, "
        "manifest.json); train on it with --config.data.source=prepared "
        "--config.data.prepared_dir=DIR.",
    )
    _add_source_args(prepare)
    prepare.add_argument("--out", required=True, help="new directory for the shards")
    prepare.add_argument("--tokenizer", help="existing tokenizer dir (else give --vocab-size)")
    prepare.add_argument("--vocab-size", type=int, help="train a tokenizer of this many pieces")
    prepare.add_argument("--tokenizer-type", default="bpe", choices=("bpe", "unigram", "char"))
    prepare.add_argument("--workers", type=int, help="tokenizing processes (default: all cores)")
    prepare.add_argument("--shard-tokens", type=int, help="tokens per shard (default 2**27)")
    prepare.set_defaults(run=_prepare)


def _tokenizer(args) -> None:
    from gptjax.tokenizer import load_tokenizer

    if args.action == "train":
        from gptjax.data.prepare import train_tokenizer_on
        from gptjax.data.sources import parse_sources

        tokenizer = train_tokenizer_on(
            parse_sources(args.source),
            args.out,
            vocab_size=args.vocab_size,
            model_type=args.type,
            validation_fraction=args.validation_fraction,
        )
        print(f"tokenizer: {tokenizer.vocab_size} pieces, sha256 {tokenizer.sha256} in {args.out}")
        return
    tokenizer = load_tokenizer(args.tokenizer)
    if args.action == "encode":
        for text in args.text or [sys.stdin.read()]:
            out = tokenizer.pieces(text) if args.pieces else tokenizer.encode(text)
            print(" ".join(map(str, out)))
        return
    words = args.ids or sys.stdin.read().split()
    try:
        ids = [int(word) for word in words]
    except ValueError as error:
        raise ConfigError(f"decode takes integer token ids: {error}") from None
    bad = [i for i in ids if not 0 <= i < tokenizer.vocab_size]
    if bad:
        raise DataError(
            f"token id {bad[0]} is outside {args.tokenizer}'s {tokenizer.vocab_size} pieces; "
            "decode with the tokenizer that produced the ids"
        )
    sys.stdout.write(tokenizer.decode(ids) + "\n")


def _prepare(args) -> None:
    from gptjax.data.prepare import check_out_dir, prepare, train_tokenizer_on
    from gptjax.data.shards import TOKENIZER_DIR
    from gptjax.data.sources import parse_sources
    from gptjax.tokenizer import load_tokenizer

    sources = parse_sources(args.source)
    if bool(args.tokenizer) == bool(args.vocab_size):
        raise ConfigError(
            "give either --tokenizer DIR (an existing tokenizer) or --vocab-size N (train one "
            "on these sources), not both or neither"
        )
    out = check_out_dir(args.out)
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
    else:
        print(f"training a {args.tokenizer_type} tokenizer of {args.vocab_size} pieces ...")
        tokenizer = train_tokenizer_on(
            sources,
            out / TOKENIZER_DIR,
            vocab_size=args.vocab_size,
            model_type=args.tokenizer_type,
            validation_fraction=args.validation_fraction,
        )
    options = {"shard_tokens": args.shard_tokens} if args.shard_tokens else {}
    prepare(
        sources,
        out,
        tokenizer,
        validation_fraction=args.validation_fraction,
        workers=args.workers,
        **options,
    )
    print(
        f"train on it: gptjax train --config CONFIG --workdir WORKDIR "
        f"--config.data.source=prepared --config.data.prepared_dir={out}"
    )
