"""How `gptjax prepare` makes its validation split, and the check that it can work.

Three ways, chosen by one flag each (they exclude one another):

    --validation-fraction F   whole documents, held out by a hash of their text (the default)
    --validation-tail F       the last F of each source's text, as nanoGPT splits one file:
                              train gets the first int(n * (1 - F)) of its n characters
    --validation-source SPEC  documents read from other sources; the --source ones all train

`survey` reads the sources before any tokenizer is trained or any token written, so a split
that cannot work (one document under the hash split, a tail of no character) stops with advice
that can work, and the tail split learns where to cut.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from gptjax.data.corpus import hash_units
from gptjax.data.files import expand_files
from gptjax.errors import ConfigError, DataError

# A function of one document: its pieces, each with the side it goes to (True = valid).
Sides = Callable[[str], Iterable[tuple[bool, str]]]
CHUNKS_ADVICE = (
    "',docs=chunks:65536' on a text: source (contiguous documents of that many characters)"
)


def _check_fraction(flag: str, fraction: float) -> None:
    if not 0 < fraction < 1:
        raise ConfigError(f"{flag}={fraction} must be in (0, 1), e.g. 0.05")


@dataclasses.dataclass(frozen=True)
class HashSplit:
    """A document is held out iff the first hash unit of its text is below `fraction`, so
    identical documents always land on the same side and training never sees a valid one."""

    fraction: float = 0.05

    def __post_init__(self):
        _check_fraction("--validation-fraction", self.fraction)

    def sides(self, index: int) -> Sides:
        return lambda text: ((hash_units(text)[0] < self.fraction, text),)

    def describe(self) -> dict:
        return {"method": "hash", "fraction": self.fraction}


@dataclasses.dataclass(frozen=True)
class TailSplit:
    """The last `fraction` of each source's characters (its documents in order, concatenated)
    is valid; the document the cut falls in is split there. `train_chars` (per source) is
    set by `survey`."""

    fraction: float
    train_chars: tuple[int, ...] | None = None

    def __post_init__(self):
        _check_fraction("--validation-tail", self.fraction)

    def cut(self, total_chars: int) -> int:
        return int(total_chars * (1 - self.fraction))  # nanoGPT's data[: int(n * 0.9)]

    def sides(self, index: int) -> Sides:
        if self.train_chars is None:
            raise RuntimeError("TailSplit.sides before survey() set where to cut")
        cut, seen = self.train_chars[index], 0

        def split(text: str) -> list[tuple[bool, str]]:
            nonlocal seen
            start, seen = seen, seen + len(text)
            head = text[: max(0, cut - start)]
            return [
                (side, piece) for side, piece in ((False, head), (True, text[len(head) :])) if piece
            ]

        return split

    def describe(self) -> dict:
        return {"method": "tail", "fraction": self.fraction}


@dataclasses.dataclass(frozen=True)
class SourceSplit:
    """Sources from index `first_valid` on (the --validation-source ones) are valid."""

    first_valid: int
    specs: tuple[str, ...]

    def sides(self, index: int) -> Sides:
        valid = index >= self.first_valid
        return lambda text: ((valid, text),)

    def describe(self) -> dict:
        return {"method": "source", "sources": list(self.specs)}


Split = HashSplit | TailSplit | SourceSplit
DEFAULT_SPLIT = HashSplit(0.05)


def split_from_flags(
    fraction: float | None, tail: float | None, valid_specs: list[str] | None, sources: list
) -> Split:
    """The split the flags name (at most one of them; none = the hash split at 0.05).

    `sources` are the training sources; validation sources are appended to them by the caller
    (`SourceSplit.first_valid` is where they start).
    """
    given = [
        flag
        for flag, value in (
            ("--validation-fraction", fraction),
            ("--validation-tail", tail),
            ("--validation-source", valid_specs),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)} each make the validation split; give one of them")
    if tail is not None:
        return TailSplit(tail)
    if valid_specs is not None:
        return SourceSplit(len(sources), tuple(valid_specs))
    return DEFAULT_SPLIT if fraction is None else HashSplit(fraction)


def check_disjoint(train: list, valid: list) -> None:
    """Refuses a --validation-source that reads what a --source reads (a file, or the same
    builtin/tfds spec): its text would be trained on."""

    def reads(source) -> set[str]:
        pattern = getattr(source, "pattern", "")
        return {str(p) for p in expand_files(pattern, "--source")} if pattern else {source.spec}

    trained = set().union(*map(reads, train))
    for source in valid:
        if shared := sorted(reads(source) & trained):
            raise ConfigError(
                f"--validation-source {source.spec!r} reads {shared[0]}, which a --source reads "
                "too: validation text must not be trained on; name text of its own"
            )


def survey(sources: list, split: Split, *, need_valid: bool = True) -> Split:
    """Reads the sources (documents only, no tokenizer) and stops with a DataError when the
    split leaves train or valid empty (valid may be, without `need_valid`: training a
    tokenizer needs none); returns `split`, for the tail with its cuts set.

    The hash split stops reading once both sides hold a document (the first few dozen
    documents, on a real corpus); the tail needs every source's length.
    """
    specs = ", ".join(s.spec for s in sources)
    if isinstance(split, TailSplit):
        totals = [sum(map(len, s.documents())) for s in sources]
        cuts = tuple(split.cut(total) for total in totals)
        valid, train = sum(totals) - sum(cuts), sum(cuts)
        if not train or (need_valid and not valid):
            side = "valid" if not valid else "train"
            raise DataError(
                f"--validation-tail {split.fraction} leaves the {side} split empty: {specs} "
                f"hold(s) {sum(totals)} characters; add text or "
                + ("raise" if not valid else "lower")
                + " --validation-tail"
            )
        return dataclasses.replace(split, train_chars=cuts)
    if isinstance(split, SourceSplit):
        for source in sources[split.first_valid :] if need_valid else []:
            if next(iter(source.documents()), None) is None:
                raise DataError(
                    f"--validation-source {source.spec} holds no text (only whitespace); name "
                    "a source with text"
                )
        return split
    documents, found, wanted = 0, set(), {False, True} if need_valid else {False}
    for index, source in enumerate(sources):
        sides = split.sides(index)
        for text in source.documents():
            documents += 1
            found.update(side for side, _ in sides(text))
            if found >= wanted:
                return split
    if not documents:
        raise DataError(f"{specs} hold(s) no text (only whitespace); add text")
    empty = "train" if True in found else "valid"
    raise DataError(
        f"no document lands in the {empty} split: {specs} hold(s) {documents} document(s) and "
        f"the hash split (--validation-fraction {split.fraction:g}) holds out whole documents; "
        f"cut the text into documents with {CHUNKS_ADVICE}, take the end of the text with "
        "--validation-tail 0.1, or name held-out text with --validation-source SPEC"
    )
