"""Everything a training run reads: the tokenizer and the train/validation rows.

`data.source="builtin"`: the tokenizer is trained once per workdir (or loaded from
`data.tokenizer`) and the streams are cached in the workdir keyed by the tokenizer's hash, so
a restarted run reuses both. `data.source="prepared"`: the memory-mapped shards that
`gptjax prepare` wrote to `data.prepared_dir`, checked against its manifest (sizes; the
contents once per dataset by `gptjax.data.shard_verify`, which the caller runs). Either
stream is cut into rows of data.seq_len (gptjax.data.token_rows), packed as data.packing says.
`data.source="conversations"` (SFT): chat examples rendered with the chat template and packed
into rows with their loss masks (`gptjax.data.conversations`); the tokenizer is the one of the
`init_from` checkpoint, installed into the workdir before this runs. `data.source=
"preferences"` (DPO): chosen/rejected pairs packed with their shared prompt
(`gptjax.data.preferences`), the tokenizer again the `init_from` checkpoint's.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from etils import epath

from gptjax.data.conversations import (
    builtin_conversations,
    pack_conversations,
    read_conversations,
    split_conversations,
)
from gptjax.data.corpus import builtin_documents, split_documents
from gptjax.data.preferences import (
    kinds_of,
    pack_preferences,
    read_preferences,
    split_builtin_preferences,
    split_preferences,
)
from gptjax.data.rows import Rows
from gptjax.data.shards import Prepared, ShardedTokens, open_prepared, token_counts
from gptjax.data.token_rows import TokenRows, encode_documents
from gptjax.errors import ConfigError, DataError
from gptjax.pair_kinds import UNTAGGED, check_kinds
from gptjax.paths import PathLike, as_path
from gptjax.tokenizer import (
    Tokenizer,
    check_vocab,
    load_tokenizer,
    train_tokenizer,
    unigram_entropy,
    unigram_entropy_from_counts,
)


@dataclasses.dataclass(frozen=True)
class RunData:
    tokenizer: Tokenizer
    # What the pipeline batches: a token stream (documents as [bos] ids [eos], an int32 array
    # or memory-mapped shards) cut into rows, or conversations / preference pairs already
    # packed into rows with their loss weights.
    train_rows: Rows
    valid_rows: Rows
    # nats/token of the validation targets' token frequencies (NaN for preference pairs)
    unigram_entropy: float
    manifest: dict | None = None  # the prepared directory's manifest (source="prepared")
    # its shards, opened but not yet hashed: `gptjax.data.shard_verify.verify_once` does that
    prepared: Prepared | None = None
    # Which held-out set valid_rows are, in words, for the log ("the valid split of data/x ...")
    valid_source: str = ""
    # The kinds of the held-out preference pairs, when tagged: DPO's evaluation reports each
    pair_kinds: tuple[str, ...] = ()


def _tokenizer(data_config, train_docs: list[str], workdir: epath.Path, log) -> Tokenizer:
    if data_config.tokenizer:
        return load_tokenizer(data_config.tokenizer)
    local = workdir / "tokenizer"
    if (local / "tokenizer.model").is_file():
        return load_tokenizer(local)
    log(f"training a {data_config.tokenizer_type} tokenizer, {data_config.vocab_size} pieces ...")
    return train_tokenizer(
        train_docs, local, vocab_size=data_config.vocab_size, model_type=data_config.tokenizer_type
    )


def _cached_stream(path: epath.Path, docs: list[str], tokenizer: Tokenizer) -> np.ndarray:
    if path.is_file():
        try:
            with path.open("rb") as f:  # np.load(path) would take gs:// for a local name
                return np.load(f)
        except (ValueError, OSError) as error:
            raise DataError(
                f"token cache {path} is corrupt ({error}); delete it to rebuild"
            ) from None
    stream = encode_documents(docs, tokenizer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    with tmp.open("wb") as f:
        np.save(f, stream)
    tmp.replace(path)
    return stream


def prepare_run_data(data_config, model_vocab_size: int, workdir: PathLike, log=print) -> RunData:
    """Tokenizer + rows for a run; refuses a model vocabulary smaller than the tokenizer's."""
    # data.source is one of these four: gptjax.config.DataConfig checked it.
    build = {
        "builtin": _builtin,
        "prepared": _prepared,
        "conversations": _conversations,
        "preferences": _preferences,
    }[data_config.source]
    return build(data_config, model_vocab_size, as_path(workdir, "workdir"), log)


def _token_rows(data_config, tokens: np.ndarray | ShardedTokens, tokenizer: Tokenizer) -> Rows:
    return TokenRows(
        tokens,
        seq_len=data_config.seq_len,
        bos_id=tokenizer.bos_id,
        pad_id=tokenizer.pad_id,
        packing=data_config.packing,
    )


def _builtin(data_config, model_vocab_size: int, workdir: epath.Path, log) -> RunData:
    train_docs, valid_docs = split_documents(builtin_documents(), data_config.validation_fraction)
    tokenizer = _tokenizer(data_config, train_docs, workdir, log)
    check_vocab(tokenizer.vocab_size, model_vocab_size)
    cache = workdir / "data"
    key = tokenizer.sha256[:16]
    train_stream = _cached_stream(cache / f"train-{key}.npy", train_docs, tokenizer)
    valid_stream = _cached_stream(cache / f"valid-{key}.npy", valid_docs, tokenizer)
    return RunData(
        tokenizer,
        _token_rows(data_config, train_stream, tokenizer),
        _token_rows(data_config, valid_stream, tokenizer),
        unigram_entropy(valid_stream),
        valid_source=f"{len(valid_docs):,} documents of the built-in corpus chosen by a hash "
        f"of their text (data.validation_fraction={data_config.validation_fraction})",
    )


def _prepared(data_config, model_vocab_size: int, workdir: epath.Path, log) -> RunData:
    if not data_config.prepared_dir:
        raise ConfigError(
            'data.source="prepared" needs data.prepared_dir (the --out of `gptjax prepare`)'
        )
    prepared = open_prepared(data_config.prepared_dir, data_config.tokenizer)
    tokenizer = prepared.tokenizer
    check_vocab(tokenizer.vocab_size, model_vocab_size)
    entropy = unigram_entropy_from_counts(token_counts(prepared.valid, tokenizer.vocab_size))
    return RunData(
        tokenizer,
        _token_rows(data_config, prepared.train, tokenizer),
        _token_rows(data_config, prepared.valid, tokenizer),
        entropy,
        prepared.manifest,
        prepared,
        valid_source=_prepared_valid_source(data_config.prepared_dir, prepared.manifest),
    )


_SPLIT_WORDS = {
    "hash": lambda v: f"documents chosen by a hash of their text, fraction {v['fraction']}",
    "tail": lambda v: f"the last {v['fraction']} of each source's text",
    "source": lambda v: f"the text of {', '.join(v['sources'])}",
}


def _prepared_valid_source(prepared_dir: str, manifest: dict) -> str:
    """The prepared valid split in words: `gptjax prepare` chose it (a hash split, the tail
    of the text, separate sources) and training reads nothing else."""
    valid = manifest["splits"]["valid"]
    counts = f"{valid['documents']:,} documents, {valid['tokens']:,} tokens"
    if "text_bytes" in valid:
        counts += f", {valid['text_bytes']:,} bytes of text"
    # Directories prepared before the split was recorded hold only the hash fraction.
    validation = manifest.get("validation") or {
        "method": "hash",
        "fraction": manifest.get("validation_fraction"),
    }
    words = _SPLIT_WORDS.get(validation["method"], lambda v: str(v))(validation)
    return f"the valid split of {prepared_dir}: {words} ({counts})"


def _conversations(data_config, model_vocab_size: int, workdir: epath.Path, log) -> RunData:
    builtin, files = _split_specs(data_config.conversations)
    conversations = builtin_conversations() if builtin else []
    if files:
        conversations += read_conversations(files, log=log)
    train, valid = split_conversations(conversations, data_config.validation_fraction)
    if not train or not valid:
        raise DataError(
            f"data.conversations={data_config.conversations!r}: {len(train)} training and "
            f"{len(valid)} held-out conversations; both sides need at least one (more data, or "
            "another data.validation_fraction)"
        )
    texts = [message["content"] for messages in train for message in messages]
    tokenizer = _tokenizer(data_config, texts, workdir, log)
    check_vocab(tokenizer.vocab_size, model_vocab_size)
    packed_train = pack_conversations(train, tokenizer, data_config.seq_len)
    packed_valid = pack_conversations(valid, tokenizer, data_config.seq_len)
    log(f"sft train: {packed_train.describe()}")
    log(f"sft held-out: {packed_valid.describe()}")
    for packed, what in (
        (packed_train, "SFT train conversations"),
        (packed_valid, "SFT held-out conversations"),
    ):
        warning = packed.overflow_warning(what)
        if warning:
            log(warning)
    answers = packed_valid.targets[packed_valid.weights > 0]
    entropy = unigram_entropy_from_counts(np.bincount(answers, minlength=tokenizer.vocab_size))
    return RunData(
        tokenizer,
        packed_train,
        packed_valid,
        entropy,
        valid_source=f"{len(valid):,} held-out conversations chosen by a hash of their first "
        f"user message (data.validation_fraction={data_config.validation_fraction})",
    )


def _split_specs(text: str) -> tuple[bool, list[str]]:
    """ "builtin,a.jsonl, b/*.jsonl" -> (True, ["a.jsonl", "b/*.jsonl"])."""
    specs = [spec.strip() for spec in text.split(",") if spec.strip()]
    return "builtin" in specs, [spec for spec in specs if spec != "builtin"]


def _preferences(data_config, model_vocab_size: int, workdir: epath.Path, log) -> RunData:
    builtin, files = _split_specs(data_config.preferences)
    trained_kinds = check_kinds(_kind_list(data_config.preference_kinds), "data.preference_kinds")
    train, valid = [], []
    if builtin:
        train, valid = split_builtin_preferences(
            trained_kinds, data_config.validation_fraction, log
        )
    if files:
        file_train, file_valid = split_preferences(
            read_preferences(files), data_config.validation_fraction
        )
        train, valid = train + file_train, valid + file_valid
    if not train or not valid:
        raise DataError(
            f"data.preferences={data_config.preferences!r}: {len(train)} training and "
            f"{len(valid)} held-out pairs; both sides need at least one"
        )
    texts = [p["chosen"] for p in train] + [m["content"] for p in train for m in p["messages"]]
    tokenizer = _tokenizer(data_config, texts, workdir, log)
    check_vocab(tokenizer.vocab_size, model_vocab_size)
    packed_train = pack_preferences(train, tokenizer, data_config.seq_len)
    kinds = kinds_of(valid)
    packed_valid = pack_preferences(valid, tokenizer, data_config.seq_len, kinds)
    log(f"dpo train: {packed_train.describe()}")
    log(f"dpo held-out: {packed_valid.describe()}")
    for packed, what in ((packed_train, "DPO train pairs"), (packed_valid, "DPO held-out pairs")):
        warning = packed.overflow_warning(what)
        if warning:
            log(warning)
    counts = ", ".join(f"{sum(p.get('kind', UNTAGGED) == k for p in valid):,} {k}" for k in kinds)
    return RunData(
        tokenizer,
        packed_train,
        packed_valid,
        float("nan"),
        valid_source=f"{len(valid):,} held-out preference pairs chosen by a hash "
        f"(data.validation_fraction={data_config.validation_fraction})"
        + (f": {counts}" if kinds else ""),
        pair_kinds=kinds,
    )


def _kind_list(text: str) -> list[str]:
    return [kind.strip() for kind in text.split(",") if kind.strip()]
