"""Bits per byte: the text each token id spells, for every tokenizer kind, and the step's sums
against a hand computation."""

import base64
import io
import math

import numpy as np
import pytest
import sentencepiece as spm

from gptjax.data.corpus import builtin_documents
from gptjax.data.token_rows import TokenRows, encode_documents
from gptjax.steps import average_sums, text_sums
from gptjax.tokenizer import train_tokenizer
from gptjax.tokenizer.hf_bundle import FORMAT, HFTokenizer
from gptjax.tokenizer.sentencepiece_model import char_vocab_size
from gptjax.tokenizer.text_lengths import TextLengths, text_lengths

# Spaces in a row, a newline, characters of 2, 3 and 4 UTF-8 bytes (the arrow and the emoji
# are in no training text: byte fallback), and a chat marker typed as text.
TEXT = "Hi  there\n→ naïve café <|end|> ünïcödé 😀"
DOCS = builtin_documents()[:120]


def _gpt2_style(tmp_path) -> HFTokenizer:
    """A byte-level BPE tokenizer.json as GPT-2's, with <|endoftext|> as bos, eos and pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(DOCS, trainer)
    end = tk.token_to_id("<|endoftext|>")
    special = {"bos": end, "eos": end, "pad": end, "unk": None}
    return HFTokenizer.from_bundle(
        {"format": FORMAT, "backend": "tokenizers", "model": tk.to_str(), "special": special}
        | {"added": {}, "files": {}}
    )


def _llama_style(tmp_path) -> HFTokenizer:
    """A Llama-2 style sentencepiece model: a space added before every text (dummy prefix)."""
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(DOCS),
        model_writer=writer,
        vocab_size=600,
        model_type="bpe",
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    model = base64.b64encode(writer.getvalue()).decode("ascii")
    special = {"bos": 1, "eos": 2, "pad": 1, "unk": 0}
    return HFTokenizer.from_bundle(
        {"format": FORMAT, "backend": "sentencepiece", "model": model, "special": special}
        | {"added": {}, "files": {}}
    )


def char_tokenizer(docs, tmp_path):
    """A char tokenizer of exactly the pieces `docs` need (the non-blank lines' characters)."""
    lines = [line for doc in docs for line in doc.split("\n") if line.strip()]
    size = char_vocab_size(len(set("".join(lines))))
    return train_tokenizer(docs, tmp_path, vocab_size=size, model_type="char")


def _bpe(tmp_path):
    return train_tokenizer(DOCS, tmp_path, vocab_size=600, model_type="bpe")


KINDS = {
    "char": lambda tmp_path: char_tokenizer(DOCS, tmp_path),
    "bpe": _bpe,
    "gpt2-byte-level": _gpt2_style,
    "llama-sentencepiece": _llama_style,
}


@pytest.fixture(scope="module", params=sorted(KINDS))
def tokenizer(request, tmp_path_factory):
    return KINDS[request.param](tmp_path_factory.mktemp(request.param))


def test_the_ids_of_a_document_spell_exactly_its_bytes_and_characters(tokenizer):
    lengths = text_lengths(tokenizer, markers_are_text=True)
    docs = [TEXT, " leading space", *builtin_documents()]
    for doc, ids in zip(docs, tokenizer.encode_batch(docs), strict=True):
        assert lengths.count(ids) == (len(doc.encode()), len(doc)), doc[:40]


def test_a_dummy_prefix_tokenizer_spells_one_space_more_per_text(tmp_path):
    tok = _llama_style(tmp_path)
    lengths = text_lengths(tok, markers_are_text=True)
    assert lengths.prefix_bytes == 1
    ids = tok.encode("Hello")
    assert tok.backend.pieces("Hello")[0].startswith("▁")  # the space it added
    assert int(lengths.bytes[ids].sum()) == len(b"Hello") + 1
    assert lengths.count(ids) == (5, 5)


def test_char_table_by_hand(tmp_path):
    tok = char_tokenizer(DOCS, tmp_path)
    text = text_lengths(tok, markers_are_text=True)
    chat = text_lengths(tok, markers_are_text=False)
    expected = {  # piece: (bytes, chars)
        "▁": (1, 1),  # sentencepiece's space
        "a": (1, 1),
        "<0xE2>": (1, 1),  # the lead byte of a 3-byte character starts it
        "<0x86>": (1, 0),  # a continuation byte
        "<0x0A>": (1, 1),  # the newline is always a byte piece
        "<s>": (0, 0),
        "</s>": (0, 0),
        "<pad>": (0, 0),
        "<unk>": (0, 0),
    }
    if "ï" in "".join(DOCS):
        expected["ï"] = (2, 1)
    for piece, (nbytes, nchars) in expected.items():
        i = tok.token_id(piece)
        assert (text.bytes[i], text.chars[i]) == (nbytes, nchars), piece
    end = tok.token_id("<|end|>")
    assert (text.bytes[end], chat.bytes[end]) == (7, 0)  # typed text vs chat-template structure
    assert text.prefix_bytes == 0


def test_byte_level_table_by_hand(tmp_path):
    tok = _gpt2_style(tmp_path)
    lengths = text_lengths(tok, markers_are_text=True)
    assert lengths.bytes[tok.eos_id] == 0 and lengths.prefix_bytes == 0
    # "Ġ" is the byte-level alphabet's space; "Ã" + "©" spell the two bytes of "é".
    for piece, nbytes, nchars in (("Ġ", 1, 1), ("Ã", 1, 1), ("©", 1, 0), ("a", 1, 1)):
        i = tok.backend.tk.token_to_id(piece)
        assert (lengths.bytes[i], lengths.chars[i]) == (nbytes, nchars), piece


def _batch(targets, weights, inputs=None):
    targets = np.array([targets], np.int32)
    inputs = np.zeros_like(targets) if inputs is None else np.array([inputs], np.int32)
    return {"targets": targets, "weights": np.array([weights], np.float32), "inputs": inputs}


def test_bits_per_byte_and_nats_per_char_by_hand():
    # ids: 0 pad, 1 bos, 2 "é" (2 bytes, 1 char), 3 "ab" (2, 2), 4 a continuation byte (1, 0)
    lengths = TextLengths(np.array([0, 0, 2, 2, 1]), np.array([0, 0, 1, 2, 0]), 0, bos_id=1)
    # Scored: 2, 3, 4 (5 bytes, 3 chars); the pad target has weight 0.
    sums = text_sums(_batch([2, 3, 4, 0], [1, 1, 1, 0]), lengths)
    assert (float(sums["bytes"]), float(sums["chars"])) == (5.0, 3.0)
    loss_sum = 6.0  # nats over the 3 scored tokens
    out = average_sums(loss_sum, {"weight": 3.0, "accuracy": 1.0, **sums})
    assert float(out["loss"]) == pytest.approx(2.0)
    assert float(out["bits_per_byte"]) == pytest.approx(6.0 / (5 * math.log(2)))
    assert float(out["nats_per_char"]) == pytest.approx(6.0 / 3)
    assert float(out["accuracy"]) == pytest.approx(1 / 3)
    host = average_sums(loss_sum, {"weight": 3.0, **{k: float(v) for k, v in sums.items()}}, np)
    assert host["bits_per_byte"] == pytest.approx(float(out["bits_per_byte"]))


def test_a_dummy_prefix_comes_off_each_documents_first_target():
    lengths = TextLengths(np.array([0, 0, 3, 1]), np.array([0, 0, 3, 1]), 1, bos_id=1)
    # inputs: bos, 2, bos, 3 -> targets 2 ("▁ab": the first of a document), 3, 2 (first), 0
    sums = text_sums(_batch([2, 3, 2, 0], [1, 1, 1, 0], inputs=[1, 2, 1, 3]), lengths)
    assert float(sums["bytes"]) == (3 - 1) + 1 + (3 - 1)


def test_no_scored_text_gives_nan_not_a_division_by_zero():
    out = average_sums(2.0, {"weight": 1.0, "bytes": 0.0, "chars": 0.0}, np)
    assert math.isnan(out["bits_per_byte"]) and math.isnan(out["nats_per_char"])


def test_packed_rows_score_every_byte_of_the_documents_once(tmp_path):
    """Through the real rows: bos targets are not scored, eos targets spell nothing."""
    tok = _bpe(tmp_path)
    docs = [TEXT, *builtin_documents()[200:203]]
    stream = encode_documents(docs, tok)
    seq_len = 64
    pad = -(len(stream) - 1) % seq_len  # fill the last row, so no token is left out
    stream = np.concatenate([stream, np.full(pad, tok.pad_id, stream.dtype)])
    rows = TokenRows(stream, seq_len=seq_len, bos_id=tok.bos_id, pad_id=tok.pad_id)
    batch = rows.take(np.arange(rows.num_rows))
    sums = text_sums(batch, text_lengths(tok, markers_are_text=True))
    assert float(sums["bytes"]) == sum(len(d.encode()) for d in docs)
    assert float(sums["chars"]) == sum(len(d) for d in docs)


def test_the_valid_rows_spell_the_bytes_the_prepared_manifest_counted(tmp_path):
    """Cross-check with `gptjax prepare`'s own count of the text (manifest `text_bytes`): the
    validation rows plus the few tokens after the last full row spell exactly that text."""
    from gptjax import cli
    from gptjax.data.shards import open_prepared

    corpus = tmp_path / "book.txt"
    corpus.write_text("\n\n".join([*builtin_documents()[:30], TEXT]), encoding="utf-8")
    out = tmp_path / "prepared"
    code = cli.main(
        ["prepare", "--source", f"text:{corpus},docs=chunks:4000", "--validation-tail", "0.2"]
        + ["--vocab-size", "600", "--workers", "1", "--out", str(out)]
    )
    assert code == 0
    prepared = open_prepared(out)
    tok, stream = prepared.tokenizer, prepared.valid.read(0, prepared.valid.size)
    lengths = text_lengths(tok, markers_are_text=True)
    seq_len = 64
    rows = TokenRows(prepared.valid, seq_len=seq_len, bos_id=tok.bos_id, pad_id=tok.pad_id)
    sums = text_sums(rows.take(np.arange(rows.num_rows)), lengths)
    after_the_rows = stream[rows.num_rows * seq_len + 1 :]
    valid = prepared.manifest["splits"]["valid"]
    assert float(sums["bytes"]) + lengths.bytes[after_the_rows].sum() == valid["text_bytes"]
    assert float(sums["chars"]) + lengths.chars[after_the_rows].sum() == valid["text_chars"]


def test_a_tokenizer_whose_pieces_are_not_its_text_is_refused_in_one_line():
    from gptjax.errors import DataError
    from gptjax.tokenizer import Tokenizer

    class WordPieceLike(Tokenizer):  # "a" encodes to a piece "##a" that is not its text
        bos_id, eos_id, pad_id = 0, 0, 0

        def token_bytes(self):
            return [b"", b"##a"]

        def encode(self, text):
            return [1]

    with pytest.raises(DataError, match=r"spells 'a' in 3 bytes; its pieces cannot be counted"):
        text_lengths(WordPieceLike(b"model"), markers_are_text=True)
