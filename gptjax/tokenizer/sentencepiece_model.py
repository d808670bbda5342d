"""SentencePiece tokenizer trained by gptjax: fixed special ids, byte fallback, exact round trip.

Ids 0-3 are `<pad> <unk> <s> </s>`, ids 4-7 the chat-role symbols in `CHAT_TOKENS`, then 256
byte pieces, then learned pieces. Normalisation is off (identity, no whitespace collapsing, no
dummy prefix) so `decode(encode(text)) == text` for any text, code indentation included.
"""

import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence

import sentencepiece as spm

from gptjax.errors import ConfigError, DataError
from gptjax.paths import PathLike
from gptjax.tokenizer.base import (
    BOS_ID,
    BOS_PIECE,
    CHAT_TOKENS,
    EOS_ID,
    EOS_PIECE,
    MODEL_TYPES,
    PAD_ID,
    PAD_PIECE,
    RESERVED_PIECES,
    UNK_ID,
    UNK_PIECE,
    Tokenizer,
)

# SentencePiece drops training sentences longer than this many bytes; we chop instead.
MAX_SENTENCE_BYTES = 4192
# Training reads at most this many sentences (a random subset beyond it): memory and time
# stay bounded for big corpora, and 2M lines is far more than a 32k vocab needs.
INPUT_SENTENCE_SIZE = 2_000_000
SEED = 0
# Fixed, not os.cpu_count(): sentencepiece's result depends on the thread count (measured:
# 1, 2 and 4 threads give three different models), and the same corpus must give the same
# tokenizer on a laptop and on a TPU host.
TRAIN_THREADS = 4


# sentencepiece writes a space as this meta symbol, so the two are one piece.
_SPACE_PIECE = "\u2581"


def _training_sentences(documents: Iterable[str]) -> Iterator[str]:
    """Non-blank lines of every document, each chopped to at most MAX_SENTENCE_BYTES bytes.

    Documents are far longer than a sentencepiece "sentence"; lines keep the count sane. The
    newline itself is never learned: at encode time it becomes the byte piece <0x0A>.
    """
    for doc in documents:
        for line in doc.split("\n"):
            if not line.strip():
                continue
            data = line.encode("utf-8")
            while data:
                chunk = data[:MAX_SENTENCE_BYTES].decode("utf-8", errors="ignore")
                if not chunk:  # a cut inside the first character; cannot happen at 4 KB
                    break
                yield chunk
                data = data[len(chunk.encode("utf-8")) :]


def _spm_message(error: Exception) -> str:
    """The human part of a sentencepiece error ("INTERNAL: file.cc(744) [check] message")."""
    return re.sub(r"^.*\]\s*", "", str(error)).strip() or str(error)


def train_tokenizer(
    documents: Iterable[str],
    out_dir: PathLike,
    *,
    vocab_size: int,
    model_type: str = "bpe",
) -> "SentencePieceTokenizer":
    """Train on `documents`, write `out_dir/tokenizer.model` + `tokenizer.json`, return it.

    Deterministic: the same documents and arguments give the same model bytes. A `char`
    model holds RESERVED_PIECES + one piece per distinct character of the training text
    (the newline excepted: it is the byte piece <0x0A>); any other `vocab_size` is refused
    (ConfigError naming the size that keeps every character), never capped or byte-filled.
    """
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"tokenizer model_type={model_type!r} must be one of {MODEL_TYPES}")
    if vocab_size <= RESERVED_PIECES:
        raise ConfigError(
            f"tokenizer vocab_size={vocab_size} must exceed the {RESERVED_PIECES} reserved "
            f"pieces (specials, chat symbols, 256 bytes); try 4096"
        )
    # Sentencepiece's shuffle and sampling draw from a process-global generator.
    spm.set_random_generator_seed(SEED)
    writer = io.BytesIO()
    characters: set[str] = set()
    sentences = _training_sentences(documents)
    if model_type == "char":
        sentences = _noting_characters(sentences, characters)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences,
            model_writer=writer,
            vocab_size=vocab_size,
            model_type=model_type,
            byte_fallback=True,
            # Every character the corpus holds gets its own piece; rarer ones in new text
            # still encode via bytes.
            character_coverage=1.0,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_piece=PAD_PIECE,
            unk_piece=UNK_PIECE,
            bos_piece=BOS_PIECE,
            eos_piece=EOS_PIECE,
            user_defined_symbols=list(CHAT_TOKENS),
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            max_sentence_length=MAX_SENTENCE_BYTES,
            input_sentence_size=INPUT_SENTENCE_SIZE,
            shuffle_input_sentence=True,
            num_threads=TRAIN_THREADS,
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = _spm_message(e)
        if "ocabulary size" in msg:
            raise ConfigError(f"tokenizer vocab_size={vocab_size}: {msg}") from None
        raise DataError(f"tokenizer training failed (is the corpus empty?): {msg}") from None
    tokenizer = SentencePieceTokenizer.parse(writer.getvalue(), name="<trained>")
    if model_type == "char":
        _check_char_vocab(tokenizer, vocab_size, characters)
    tokenizer.save(out_dir, model_type=model_type)
    return tokenizer


def _noting_characters(sentences: Iterator[str], characters: set[str]) -> Iterator[str]:
    for sentence in sentences:
        characters.update(sentence)
        yield sentence


def char_vocab_size(distinct_characters: int) -> int:
    """The pieces of a char tokenizer for text of this many distinct characters (newline
    excepted): the reserved ones (4 specials, the chat symbols, 256 bytes), then one each."""
    return RESERVED_PIECES + distinct_characters


def _check_char_vocab(
    tokenizer: "SentencePieceTokenizer", vocab_size: int, characters: set[str]
) -> None:
    """Refuses a char vocabulary that differs from the text's: smaller sends the rarest
    characters to byte fallback (several tokens each), larger cannot be made (sentencepiece
    would silently stop at the characters it has)."""
    pieces = {c.replace(" ", _SPACE_PIECE) for c in characters}
    needed = char_vocab_size(len(pieces))
    what = (
        f"the training text holds {len(pieces)} distinct characters besides the newline, so a "
        f"char tokenizer has {RESERVED_PIECES} reserved pieces (4 specials, "
        f"{len(CHAT_TOKENS)} chat symbols, 256 bytes) + {len(pieces)} = {needed}"
    )
    if vocab_size > needed:
        raise ConfigError(f"tokenizer vocab_size={vocab_size} cannot be made: {what}; use {needed}")
    missing = sorted(p for p in pieces if tokenizer._sp.piece_to_id(p) == tokenizer.unk_id)
    if missing:
        shown = "".join(missing[:10]).replace(_SPACE_PIECE, " ")
        raise ConfigError(
            f"tokenizer vocab_size={vocab_size} would encode {len(missing)} characters (e.g. "
            f"{shown!r}) as bytes, several tokens each: {what}; use {needed}"
        )


def sentencepiece_token_bytes(sp: spm.SentencePieceProcessor) -> list[bytes]:
    """Bytes of each piece in text: `▁` is one space, `<0xNN>` that byte, control and unknown
    pieces nothing (decode drops the former and shows the latter as " ⁇ ")."""
    out = []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            out.append(b"")
        elif sp.is_byte(i):
            out.append(bytes([int(piece[3:5], 16)]))
        else:
            out.append(piece.replace(_SPACE_PIECE, " ").encode("utf-8"))
    return out


class SentencePieceTokenizer(Tokenizer):
    """A loaded sentencepiece model plus the bytes it came from (for fingerprints)."""

    def __init__(self, processor: spm.SentencePieceProcessor, model_bytes: bytes) -> None:
        super().__init__(model_bytes)
        self._sp = processor

    @classmethod
    def parse(cls, model_bytes: bytes, *, name: str = "<bytes>") -> "SentencePieceTokenizer":
        """Load from serialized model bytes; `name` is what an error message calls them."""
        try:
            sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        except RuntimeError:
            sp = None
        # An empty proto parses "successfully" into a model with no pieces.
        if sp is None or sp.get_piece_size() == 0:
            raise DataError(
                f"tokenizer {name} is not a valid sentencepiece model (corrupt or truncated?); "
                "retrain it with gptjax or restore the file"
            )
        ids = {"pad": sp.pad_id(), "bos": sp.bos_id(), "eos": sp.eos_id()}
        missing = [n for n, i in ids.items() if i < 0]
        if missing:
            raise DataError(
                f"tokenizer {name} defines no {'/'.join(missing)} token, which gptjax needs to "
                "pack documents; retrain it with gptjax's train_tokenizer"
            )
        return cls(sp, model_bytes)

    def metadata(self, model_type: str | None) -> dict:
        return {
            "vocab_size": self.vocab_size,
            "model_type": model_type,
            "sha256": self.sha256,
            "special_ids": {
                PAD_PIECE: self.pad_id,
                UNK_PIECE: self._sp.unk_id(),
                BOS_PIECE: self.bos_id,
                EOS_PIECE: self.eos_id,
            },
            "chat_tokens": {piece: self._sp.piece_to_id(piece) for piece in CHAT_TOKENS},
            "sentencepiece_version": spm.__version__,
        }

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def pad_id(self) -> int:
        return self._sp.pad_id()

    @property
    def unk_id(self) -> int | None:
        return self._sp.unk_id()

    @property
    def bos_id(self) -> int:
        return self._sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    def token_id(self, piece: str) -> int:
        """The id of `piece` (e.g. "<|user|>"); DataError if the model has no such piece."""
        i = self._sp.piece_to_id(piece)
        if i == self._sp.unk_id() and piece != self._sp.id_to_piece(i):
            raise DataError(f"tokenizer {self.sha256[:12]}… has no piece {piece!r}")
        return i

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without bos/eos."""
        return self._sp.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, encoded on all cores."""
        return self._sp.encode(list(texts), out_type=int, num_threads=os.cpu_count() or 1)

    def pieces(self, text: str) -> list[str]:
        """The pieces `encode` maps `text` to (shown by `gptjax tokenizer encode --pieces`)."""
        return self._sp.encode(text, out_type=str)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; pad/bos/eos decode to nothing."""
        return self._sp.decode([int(i) for i in ids])

    def token_bytes(self) -> list[bytes]:
        return sentencepiece_token_bytes(self._sp)
