"""`gptjax tokenizer` and `gptjax prepare`: their flags and their bodies."""

from __future__ import annotations

import argparse
import sys

from gptjax.errors import ConfigError, DataError


def add_parsers(verbs) -> None:
    _add_tokenizer_parser(verbs)
    _add_prepare_parser(verbs)


_SOURCE_HELP = (
    "builtin | text:GLOB[,docs=file|chunks:N|blank_lines][,sep=STR] | jsonl:GLOB[,field=text] "
    "| tfds:NAME[,split=train][,field=text][,data_dir=DIR], each with optional ,weight=W "
    "and ,errors=strict|replace; repeat for a mixture. A text file is one document "
    "(docs=file), contiguous documents of N characters (docs=chunks:65536: one big file, "
    "every character kept), or one document per paragraph (docs=blank_lines drops the blank "
    "lines)"
)
_CHAR_HELP = (
    "bpe | unigram | char. A char tokenizer has one piece per distinct character of the "
    "training text (the newline excepted: it is a byte piece) after 264 reserved ones (4 "
    "specials, 4 chat symbols, 256 bytes for unseen text), so its --vocab-size is exactly 264 + "
    "that count: a 5 MB English novel with 83 characters needs 347. Another size is refused "
    "with the one that fits"
)


_TOKENIZER_TYPES = ("bpe", "unigram", "char")


def _add_tokenizer_type_arg(parser: argparse.ArgumentParser) -> None:
    """`--tokenizer-type`, spelled the same by `prepare` and `tokenizer train`."""
    parser.add_argument(
        "--tokenizer-type", default="bpe", choices=_TOKENIZER_TYPES, help=_CHAR_HELP
    )


def _add_source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", action="append", required=True, help=_SOURCE_HELP)
    split = parser.add_argument_group(
        "validation split (give at most one; default --validation-fraction 0.05)"
    )
    split.add_argument(
        "--validation-fraction",
        type=float,
        metavar="F",
        help="hold out whole documents, chosen by a hash of their text (0.05); needs many "
        "documents: cut one big file with docs=chunks:N",
    )
    split.add_argument(
        "--validation-tail",
        type=float,
        metavar="F",
        help="hold out the last F of each source's text, cut at a character (nanoGPT's split: "
        "train gets the first int(n * (1 - F)) of n characters)",
    )
    split.add_argument(
        "--validation-source",
        action="append",
        metavar="SPEC",
        help="hold out this source's documents (same syntax as --source; repeat for several); "
        "the --source documents all train",
    )


def _sources_and_split(args) -> tuple[list, object]:
    """The training sources, then any validation sources, and the split the flags name."""
    from gptjax.data.sources import parse_sources
    from gptjax.data.splits import check_disjoint, split_from_flags

    sources = parse_sources(args.source, check=False)
    split = split_from_flags(
        args.validation_fraction, args.validation_tail, args.validation_source, sources
    )
    valid = parse_sources(args.validation_source, check=False) if args.validation_source else []
    for source in valid:
        if source.weight != 1:
            raise ConfigError(
                f"--validation-source {source.spec!r}: weight= applies to training text; "
                "validation text is read once"
            )
    for source in sources + valid:
        source.check()
    check_disjoint(sources, valid)
    return sources + valid, split


def _add_tokenizer_parser(verbs) -> None:
    tokenizer = verbs.add_parser("tokenizer", help="train a tokenizer, or encode/decode with one")
    actions = tokenizer.add_subparsers(dest="action", required=True)
    tokenizer.set_defaults(run=_tokenizer)
    train = actions.add_parser("train", help="train a sentencepiece tokenizer on sources")
    _add_source_args(train)
    train.add_argument("--out", required=True, help="directory for tokenizer.model/.json")
    train.add_argument("--vocab-size", type=int, required=True, help="pieces, e.g. 32768")
    _add_tokenizer_type_arg(train)
    # The flag's first spelling, kept working (hidden) so existing scripts do not break.
    train.add_argument(
        "--type",
        dest="tokenizer_type",
        choices=_TOKENIZER_TYPES,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
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
    prepare.add_argument(
        "--out",
        required=True,
        help="a new or empty directory for the shards; left as it was if prepare fails",
    )
    prepare.add_argument("--tokenizer", help="existing tokenizer dir (else give --vocab-size)")
    prepare.add_argument("--vocab-size", type=int, help="train a tokenizer of this many pieces")
    _add_tokenizer_type_arg(prepare)
    prepare.add_argument(
        "--workers", type=int, help="tokenizing processes, at least 1 (default: all cores)"
    )
    prepare.add_argument(
        "--shard-tokens", type=int, help="tokens per shard, at least 1 (default 2**27)"
    )
    prepare.set_defaults(run=_prepare)


def _tokenizer(args) -> None:
    from gptjax.tokenizer import load_tokenizer

    if args.action == "train":
        from gptjax.data.prepare import train_tokenizer_on
        from gptjax.data.splits import survey

        sources, split = _sources_and_split(args)
        tokenizer = train_tokenizer_on(
            sources,
            args.out,
            vocab_size=args.vocab_size,
            model_type=args.tokenizer_type,
            split=survey(sources, split, need_valid=False),
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
    from gptjax.data.prepare import NewTokenizer, check_out_dir, prepare
    from gptjax.tokenizer import load_tokenizer

    if (args.tokenizer is None) == (args.vocab_size is None):
        raise ConfigError(
            "give either --tokenizer DIR (an existing tokenizer) or --vocab-size N (train one "
            "on these sources), not both or neither"
        )
    out = check_out_dir(args.out)  # before reading anything: a bad --out is a usage error
    sources, split = _sources_and_split(args)
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
    else:
        tokenizer = NewTokenizer(args.vocab_size, args.tokenizer_type)
    # prepare() checks --workers and --shard-tokens before it reads a source.
    options = {} if args.shard_tokens is None else {"shard_tokens": args.shard_tokens}
    manifest = prepare(sources, out, tokenizer, split=split, workers=args.workers, **options)
    vocab = manifest["tokenizer"]["vocab_size"]
    print(
        f"train on it (a {vocab}-piece tokenizer; model.vocab_size must be at least {vocab}, a "
        f"multiple of 128 is fastest): gptjax train --config CONFIG --workdir WORKDIR "
        f"--config.data.source=prepared --config.data.prepared_dir={out} "
        f"--config.model.vocab_size={-(-vocab // 128) * 128}"
    )
