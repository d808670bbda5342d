"""How the bytes of a text file become documents (the `docs=`/`sep=` of a text: source).

Each reader takes the open file and yields (byte offset, bytes) for the error messages of
gptjax.data.sources, which decodes them; `pieces` cuts decoded text into fixed-size documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO


def whole(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    yield 0, f.read()


def paragraphs(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(byte offset, bytes) of each run of non-blank lines; the final line break is dropped."""
    lines: list[bytes] = []
    offset = start = 0
    for line in f:
        if line.strip():
            if not lines:
                start = offset
            lines.append(line)
        elif lines:
            yield start, b"".join(lines).rstrip(b"\r\n")
            lines = []
        offset += len(line)
    if lines:
        yield start, b"".join(lines).rstrip(b"\r\n")
    elif offset == 0:
        yield 0, b""  # an empty file; TextSource reports it


def split_on(f: BinaryIO, sep: bytes, read_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(byte offset, bytes) of each piece between occurrences of `sep`, read in chunks."""
    buffer, offset = b"", 0
    while chunk := f.read(read_bytes):
        buffer += chunk
        *pieces, buffer = buffer.split(sep)
        for piece in pieces:
            yield offset, piece
            offset += len(piece) + len(sep)
    yield offset, buffer


def utf8_blocks(f: BinaryIO, block_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(byte offset, bytes) of `f` in blocks of about `block_bytes`, each ending between two
    UTF-8 characters (a sequence cut by a read waits for the next block), so each block
    decodes alone exactly as the whole file would. An empty file gives one empty block."""
    carry, offset = b"", 0
    while chunk := f.read(block_bytes):
        data = carry + chunk
        end = _whole_characters(data)
        if end:
            yield offset, data[:end]
        offset, carry = offset + end, data[end:]
    if carry or not offset:
        yield offset, carry


def _whole_characters(data: bytes) -> int:
    """The length of the longest prefix of `data` that does not end inside a UTF-8 sequence."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: a sequence starts here
            length = 2 if 0xC0 <= byte < 0xE0 else 3 if 0xE0 <= byte < 0xF0 else 4
            length = length if byte >= 0xC0 and byte < 0xF8 else 1
            return len(data) - back if back < length else len(data)
    return len(data)


def pieces(texts: Iterable[str], size: int) -> Iterator[str]:
    """The concatenation of `texts` cut every `size` characters (the last piece shorter)."""
    carry = ""
    for text in texts:
        if carry:
            fill = size - len(carry)
            carry, text = carry + text[:fill], text[fill:]
            if len(carry) < size:
                continue
            yield carry
        whole = len(text) - len(text) % size
        for start in range(0, whole, size):
            yield text[start : start + size]
        carry = text[whole:]
    if carry:
        yield carry
