"""Where documents come from: the built-in corpus, text files, JSONL, TFDS datasets, mixtures.

`gptjax tokenizer train` and `gptjax prepare` name a source with a spec string (`--source`,
repeat it for a mixture):

    builtin                                          the corpus of gptjax.data.corpus
    text:GLOB[,docs=file|chunks:N|blank_lines][,sep=STRING]
                                                     plain text, .gz/.xz/.bz2 read as such
    jsonl:GLOB[,field=text]                          one JSON object per line
    tfds:NAME[,split=train][,field=text][,data_dir=DIR]

each optionally followed by `,weight=W` and `,errors=strict|replace`. A text file is one
document (`docs=file`, the default), or contiguous documents of N characters each
(`docs=chunks:N`; the last of a file is shorter; concatenated they are the file, byte for
byte, blank and whitespace-only stretches included), or documents separated by blank lines
(`docs=blank_lines`: the blank lines are dropped, each paragraph is a document of its own),
or by an exact string (`sep=\\n\\n\\n`, backslash escapes decoded). Files are read in
sorted path order and streamed: at most one document (one file with docs=file) is in memory
at a time. gptjax.data.text_documents holds the readers.

Non-UTF-8 policy: `errors=strict` (the default) stops at the first invalid byte with a
DataError naming the file and byte offset; `errors=replace` decodes each invalid sequence as
U+FFFD and counts it (prepare reports the count and writes it into the manifest).
Whitespace-only documents are skipped and counted, never silently (chunks keep them: they
are a stretch of the file).

Mixture weights: a source of weight W contributes each of its training documents floor(W)
times, plus once more for a fraction frac(W) of them picked by a hash of the text (weight 2 =
two epochs of that source, 0.5 = half of it). Copies are emitted in separate passes over the
sources, so repeats lie far apart. Validation documents are emitted once whatever the weight.
Which documents are validation is the split's business (gptjax.data.splits).
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import lzma
import math
import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from etils import epath

from gptjax.data.corpus import builtin_documents, hash_units
from gptjax.data.files import expand_files, open_compressed
from gptjax.data.splits import HashSplit, Split
from gptjax.data.text_documents import paragraphs, pieces, split_on, utf8_blocks, whole
from gptjax.errors import ConfigError, DataError
from gptjax.paths import as_path, file_size

ERROR_POLICIES = ("strict", "replace")
TEXT_MODES = ("file", "chunks", "blank_lines")  # docs=chunks:N
_READ_CHUNK = 1 << 20  # bytes per read when splitting on a separator or into chunks
_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclasses.dataclass
class SourceStats:
    """What reading a source found; reported by prepare and stored in its manifest."""

    documents: int = 0  # non-empty documents read (first pass only)
    replaced: int = 0  # invalid UTF-8 sequences decoded as U+FFFD (errors=replace)
    skipped_empty: int = 0  # whitespace-only documents, not emitted


@dataclasses.dataclass
class Source:
    """One source of documents; `documents()` streams them in a fixed order."""

    spec: str
    weight: float = 1.0
    errors: str = "strict"

    # Whether a whitespace-only document is a stretch of contiguous text to keep (chunks).
    keeps_whitespace = False

    def documents(self, stats: SourceStats | None = None) -> Iterator[str]:
        """The source's documents; `stats` (if given) counts what reading found."""
        stats = SourceStats() if stats is None else stats
        for text in self._texts(stats):
            if text.strip() or (text and self.keeps_whitespace):
                stats.documents += 1
                yield text
            else:
                stats.skipped_empty += 1

    def _texts(self, stats: SourceStats) -> Iterator[str]:
        raise NotImplementedError

    def check(self) -> None:
        """Fails fast (DataError) on what shows before reading: a missing file, an empty one."""


@dataclasses.dataclass
class BuiltinSource(Source):
    def _texts(self, stats: SourceStats) -> Iterator[str]:
        yield from builtin_documents()


@dataclasses.dataclass
class _FileSource(Source):
    pattern: str = ""

    def check(self) -> None:
        for path in expand_files(self.pattern, "--source"):
            if file_size(path) == 0:
                raise DataError(f"{path} is empty; remove it from the source or add text")


@dataclasses.dataclass
class TextSource(_FileSource):
    docs: str = "file"
    sep: str = ""
    chunk_chars: int = 0  # docs=chunks:N

    @property
    def keeps_whitespace(self) -> bool:
        return self.chunk_chars > 0

    def _texts(self, stats: SourceStats) -> Iterator[str]:
        for path in expand_files(self.pattern, "--source"):
            with open_compressed(path) as f:
                if self.chunk_chars:
                    yield from self._chunks(f, path, stats)
                    continue
                if self.sep:
                    chunks = split_on(f, self.sep.encode("utf-8"), _READ_CHUNK)
                elif self.docs == "blank_lines":
                    chunks = paragraphs(f)
                else:
                    chunks = whole(f)
                empty = True
                for offset, data in _guarded(chunks, path):
                    empty = empty and not data
                    yield _decode(data, path, offset, self.errors, stats)
                if empty:
                    raise DataError(f"{path} is empty; remove it from the source or add text")

    def _chunks(self, f: BinaryIO, path: epath.Path, stats: SourceStats) -> Iterator[str]:
        """The file's text in pieces of `chunk_chars` characters (the last shorter), decoded
        from blocks that end between characters, so no character is cut or lost."""
        texts = (
            _decode(data, path, offset, self.errors, stats)
            for offset, data in _guarded(utf8_blocks(f, _READ_CHUNK), path)
        )
        empty = True
        for piece in pieces(texts, self.chunk_chars):
            empty = False
            yield piece
        if empty:
            raise DataError(f"{path} is empty; remove it from the source or add text")


@dataclasses.dataclass
class JsonlSource(_FileSource):
    field: str = "text"

    def _texts(self, stats: SourceStats) -> Iterator[str]:
        for path in expand_files(self.pattern, "--source"):
            with open_compressed(path) as f:
                empty = True
                for lineno, line in enumerate(_guarded(_lines(f), path), start=1):
                    empty = False
                    if line.strip():
                        where = f"{path}:{lineno}"
                        value = self._field(_decode(line, where, 0, self.errors, stats), where)
                        yield _surrogates(value, where, self.errors, stats)
                if empty:
                    raise DataError(f"{path} is empty; remove it from the source or add lines")

    def _field(self, line: str, where: str) -> str:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg}); fix or remove that line") from None
        if not isinstance(record, dict) or self.field not in record:
            keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
            raise DataError(
                f"{where}: no field {self.field!r} (found: {keys}); "
                "name the text field with ,field=NAME in the source"
            )
        value = record[self.field]
        if not isinstance(value, str):
            raise DataError(f"{where}: field {self.field!r} is {type(value).__name__}, not text")
        return value


@dataclasses.dataclass
class TfdsSource(Source):
    name: str = ""
    split: str = "train"
    field: str = "text"
    data_dir: str = ""  # local or gs:// (tfds reads both)

    def check(self) -> None:
        from gptjax.data.tfds_source import tfds_builder  # imports TensorFlow; only when used

        if self.data_dir:
            as_path(self.data_dir, "tfds data_dir")  # an unsupported scheme is exit 2
        tfds_builder(self.name, self.data_dir or None)

    def _texts(self, stats: SourceStats) -> Iterator[str]:
        from gptjax.data.tfds_source import tfds_texts  # imports TensorFlow; only when used

        where = f"tfds {self.name}[{self.split}]"
        for index, value in enumerate(
            tfds_texts(self.name, self.split, self.field, self.data_dir or None)
        ):
            if isinstance(value, bytes):
                value = _decode(value, f"{where} example {index}", 0, self.errors, stats)
            yield value


_KINDS = {
    "builtin": (BuiltinSource, set()),
    "text": (TextSource, {"docs", "sep"}),
    "jsonl": (JsonlSource, {"field"}),
    "tfds": (TfdsSource, {"split", "field", "data_dir"}),
}


def parse_source(spec: str) -> Source:
    """A Source from its spec string (see the module docstring); ConfigError if malformed."""
    head, *items = spec.split(",")
    kind, _, target = head.partition(":")
    if kind not in _KINDS:
        raise ConfigError(
            f"--source {spec!r}: unknown kind {kind!r}; use builtin, text:GLOB, jsonl:GLOB "
            "or tfds:NAME"
        )
    cls, allowed = _KINDS[kind]
    if bool(target) == (kind == "builtin"):
        raise ConfigError(f"--source {spec!r}: {kind} {'takes no' if target else 'needs a'} target")
    options = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or key not in allowed | {"weight", "errors"}:
            known = ", ".join(sorted(allowed | {"weight", "errors"}))
            raise ConfigError(f"--source {spec!r}: bad option {item!r} (known: {known})")
        options[key] = value
    common = _common_options(spec, options)
    if kind == "text":
        return _text_source(spec, target, options, common)
    if kind == "jsonl":
        return JsonlSource(spec, pattern=target, field=options.get("field", "text"), **common)
    if kind == "tfds":
        return TfdsSource(spec, name=target, **options, **common)
    return BuiltinSource(spec, **common)


def _common_options(spec: str, options: dict) -> dict:
    weight_text = options.pop("weight", "1")
    try:
        weight = float(weight_text)
    except ValueError:
        weight = math.nan
    if not (math.isfinite(weight) and weight > 0):
        raise ConfigError(f"--source {spec!r}: weight={weight_text} must be a number > 0")
    errors = options.pop("errors", "strict")
    if errors not in ERROR_POLICIES:
        raise ConfigError(f"--source {spec!r}: errors={errors} must be strict or replace")
    return {"weight": weight, "errors": errors}


def _text_source(spec: str, pattern: str, options: dict, common: dict) -> TextSource:
    docs = options.get("docs", "file")
    mode, _, size = docs.partition(":")
    chunk_chars = _chunk_chars(spec, size) if mode == "chunks" else 0
    if mode not in TEXT_MODES or (size and mode != "chunks"):
        raise ConfigError(
            f"--source {spec!r}: docs={docs} must be file, chunks:N (N characters) or blank_lines"
        )
    sep = codecs.decode(options["sep"], "unicode_escape") if "sep" in options else ""
    if "sep" in options and (not sep or "docs" in options):
        raise ConfigError(f"--source {spec!r}: sep= must be non-empty and not combined with docs=")
    return TextSource(spec, pattern=pattern, docs=mode, sep=sep, chunk_chars=chunk_chars, **common)


def _chunk_chars(spec: str, size: str) -> int:
    if not (size.isascii() and size.isdigit()) or int(size) < 1:
        raise ConfigError(
            f"--source {spec!r}: docs=chunks:{size} needs a whole number of characters > 0, "
            "e.g. docs=chunks:65536"
        )
    return int(size)


def parse_sources(specs: Iterable[str], *, check: bool = True) -> list[Source]:
    """Sources from spec strings; with `check`, missing/empty files fail here, before reading."""
    sources = [parse_source(spec) for spec in specs]
    if not sources:
        raise ConfigError("no --source given; e.g. --source 'text:corpus/*.txt'")
    for source in sources if check else []:
        source.check()
    return sources


def _guarded(chunks: Iterable, path: epath.Path) -> Iterator:
    """`chunks`, with a damaged compressed stream or read error turned into a DataError."""
    try:
        yield from chunks
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise DataError(
            f"cannot read {path} ({e}); the file is damaged or truncated: restore or re-download it"
        ) from None


def _lines(f: BinaryIO) -> Iterator[bytes]:
    yield from f


def _decode(data: bytes, where, offset: int, errors: str, stats: SourceStats) -> str:
    """UTF-8 text of `data` under the error policy (see the module docstring)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        if errors == "strict":
            raise DataError(
                f"{where}: byte {offset + e.start} is not UTF-8 ({data[e.start : e.start + 4]!r}"
                "...); convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8) or add "
                "',errors=replace' to the source to decode bad bytes as U+FFFD (they are counted)"
            ) from None
        text = data.decode("utf-8", errors="replace")
        stats.replaced += text.count("\ufffd") - data.count("\ufffd".encode())
    return text


def _surrogates(text: str, where: str, errors: str, stats: SourceStats) -> str:
    """`text` without unpaired UTF-16 surrogates, which JSON escapes (\\ud800) can produce."""
    if not _SURROGATES.search(text):
        return text
    if errors == "strict":
        raise DataError(
            f"{where}: holds an unpaired UTF-16 surrogate, which is not text; fix the "
            "producer or add ',errors=replace' to the source"
        )
    text, count = _SURROGATES.subn("\ufffd", text)
    stats.replaced += count
    return text


def mixture(
    sources: list[Source], split: Split | float, stats: list[SourceStats]
) -> Iterator[tuple[int, bool, str]]:
    """(source index, is_validation, text) for every document emitted, in a fixed order.

    `split` (gptjax.data.splits; a float is the hash split's fraction) says which documents,
    or which part of one, are validation; training and validation never share text. Weights
    repeat or subsample the training documents (module docstring).
    """
    if not isinstance(split, Split):
        split = HashSplit(split)
    passes = max(math.ceil(s.weight) for s in sources)
    for copy in range(passes):
        for index, source in enumerate(sources):
            if copy >= math.ceil(source.weight):
                continue
            full = copy < math.floor(source.weight)
            keep = source.weight - math.floor(source.weight)
            # Later passes re-read the source; only the first one counts what it finds.
            seen = stats[index] if copy == 0 else SourceStats()
            sides = split.sides(index)  # a fresh one per pass: the tail split counts characters
            for document in source.documents(seen):
                for is_valid, text in sides(document):
                    if is_valid:
                        if copy == 0:
                            yield index, True, text
                    elif full or hash_units(text)[1] < keep:
                        yield index, False, text
