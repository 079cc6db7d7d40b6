"""Raw input streams and line-by-line decoding for the text formats.

Text sources read the file in binary and decode whole lines themselves, so
that after every line they know the byte offset just past it in the raw
file: that offset is what lets a resumed run seek straight to the first row
not yet done. Lines are read and decoded in chunks of about CHUNK_BYTES, so
memory stays bounded whatever the file's size.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import os
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import IO, NoReturn

from ..errors import InputError
from . import split_compression

CHUNK_BYTES = 1024 * 1024
BOM = "\ufeff"
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)

# What a damaged compressed stream raises while it is read.
# What open_raw returns: a binary file, standard input or a decompressor.
RawStream = IO[bytes] | io.BufferedIOBase

DAMAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error)


def suffix_compression(path: str) -> str | None:
    """The compression named by the path's suffix, or None."""
    return split_compression(path)[1]


def open_raw(path: str) -> tuple[RawStream, bool]:
    """Open ``path`` ("-" for standard input) as decompressed bytes.

    Also returns whether byte offsets in the stream can be sought on a later
    run: true only for an uncompressed regular file.
    """
    if path == "-":
        return sys.stdin.buffer, False
    compression = suffix_compression(path)
    try:
        if compression is None:
            return open(path, "rb"), True
        if compression == "gzip":
            return gzip.open(path, "rb"), False
        if compression == "bz2":
            return bz2.open(path, "rb"), False
        return _open_zstd(path), False
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(
            f"{path}: cannot be opened ({reason}); check the path and permissions"
        ) from None


def _open_zstd(path: str) -> RawStream:
    try:
        import zstandard
    except ImportError:
        raise InputError(
            f"{path}: reading .zst files needs the zstandard package; "
            "pip install zstandard, or decompress the file first"
        ) from None
    raw = open(path, "rb")
    # read_across_frames: files written by parallel compressors hold many frames.
    reader = zstandard.ZstdDecompressor().stream_reader(
        raw, read_across_frames=True, closefd=True
    )
    return io.BufferedReader(reader, CHUNK_BYTES)


def close_raw(stream: RawStream) -> None:
    """Close a stream from :func:`open_raw`, leaving standard input open."""
    if stream is not sys.stdin.buffer:
        stream.close()


def is_line_start(path: str, offset: int) -> bool:
    """True if ``offset`` in the file at ``path`` is just past a line end.

    The end of a file counts too, whether or not its last line has a newline.
    A resumed run checks this before seeking, to notice a changed file.
    """
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if offset <= 0 or offset >= size:
            return offset == size
        file.seek(offset - 1)
        return file.read(1) == b"\n"


def damage_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the (compressed) input is damaged."""
    try:
        import zstandard
    except ImportError:
        return DAMAGE_ERRORS
    return (*DAMAGE_ERRORS, zstandard.ZstdError)


def codec_name(encoding: str | None) -> str:
    """The codec for --encoding (UTF-8 when not given); a BOM is always dropped."""
    try:
        name = codecs.lookup(encoding or "utf-8").name
    except LookupError:
        raise InputError(
            f"--encoding {encoding!r} is not an encoding Python knows; "
            "try utf-8, cp1252 or latin-1"
        ) from None
    return "utf-8" if name == "utf-8-sig" else name


def splits_on_newline_byte(codec: str) -> bool:
    """True if every line of text in ``codec`` ends at a 0x0A byte.

    Holds for UTF-8 and the single-byte and ASCII-compatible code pages; not
    for UTF-16 or UTF-32, which are decoded as a text stream, without offsets.
    """
    return "\n".encode(codec) == b"\n" and "\r".encode(codec) == b"\r"


CHECK_BLOCK = 4 * 1024 * 1024


class Lines:
    """The decoded lines of a binary stream, in chunks, with their byte offsets.

    Lines keep their line ends. While a chunk is being consumed, ``base`` is
    the count of lines before it (counted from where this object started) and
    ``ends[k]`` the byte offset just past the chunk's first ``k`` lines, so
    the offset after line ``n`` is ``ends[n - base]``. ``tracks_offsets`` is
    false (and ``ends`` empty) when the encoding is not line-based.
    ``exhausted`` turns true once the stream has no more lines.
    """

    def __init__(
        self,
        path: str,
        stream: RawStream,
        codec: str,
        *,
        offset: int = 0,
        line: int = 0,
        user_encoding: bool = False,
    ) -> None:
        self.path = path
        self.codec = codec
        self.first_line = line
        self.base = 0
        self.ends = [offset]
        self.tracks_offsets = True
        self.exhausted = False
        self._offset = offset
        self._consumed = 0
        self._user_encoding = user_encoding
        self._stream = stream
        self._text: io.TextIOWrapper | None = None
        if not splits_on_newline_byte(codec):
            self._text = io.TextIOWrapper(stream, codec, newline="")  # type: ignore[arg-type]
            self.ends = []
            self.tracks_offsets = False

    def chunks(self) -> Iterator[list[str]]:
        """Yield lists of decoded lines; the bookkeeping is updated before each."""
        try:
            yield from self._chunks()
        finally:
            if self._text is not None and not self._stream.closed:
                # Leave the byte stream to its owner (it may be standard input).
                self._text.detach()
            self._text = None

    def _chunks(self) -> Iterator[list[str]]:
        damaged = damage_errors()
        at_start = self._offset == 0
        while True:
            try:
                texts, raw = self._read_chunk()
            except damaged as exc:
                raise InputError(
                    f"{self.path}: the data is damaged after line "
                    f"{self.first_line + self._consumed} ({exc}); "
                    "check or re-create the file"
                ) from None
            if not texts:
                break
            if at_start and texts[0].startswith(BOM):
                texts[0] = texts[0][1:]
            at_start = False
            self.base = self._consumed
            self._consumed += len(texts)
            if raw is not None:
                self.ends = list(accumulate(map(len, raw), initial=self._offset))
                self._offset = self.ends[-1]
            yield texts
        self.exhausted = True

    def _read_chunk(self) -> tuple[list[str], list[bytes] | None]:
        if self._text is not None:
            try:
                return self._text.readlines(CHUNK_BYTES), None
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{self.path}: text after line {self.first_line + self._consumed} "
                    f"is not valid {self.codec} ({exc.reason}); check --encoding"
                ) from None
        raw = self._stream.readlines(CHUNK_BYTES)
        codec = self.codec
        try:
            return [line.decode(codec) for line in raw], raw
        except UnicodeDecodeError:
            self._raise_decode_error(raw)

    def _raise_decode_error(self, raw: list[bytes]) -> NoReturn:
        offset = self._offset
        lines_before = self.first_line + self._consumed
        for index, line in enumerate(raw):
            try:
                line.decode(self.codec)
            except UnicodeDecodeError as exc:
                number = lines_before + index + 1
                byte = line[exc.start]
                where = f"byte 0x{byte:02x} at byte offset {offset + exc.start}"
                raise InputError(
                    f"{self.path}, line {number}: {where} is not valid "
                    f"{self._codec_label()}; {self._encoding_hint(number, line)}"
                ) from None
            offset += len(line)
        raise InputError(f"{self.path}: is not valid {self._codec_label()}")

    def _codec_label(self) -> str:
        return "UTF-8" if self.codec == "utf-8" else self.codec

    def _encoding_hint(self, number: int, line: bytes) -> str:
        if number == 1 and line.startswith(UTF16_BOMS):
            return "the file looks like UTF-16: pass --encoding utf-16"
        if self._user_encoding:
            return "check --encoding (for example --encoding cp1252)"
        return "pass the file's encoding, for example --encoding cp1252"


@dataclass(frozen=True, slots=True)
class TextCounts:
    """Byte counts gathered while checking a text file: line ends and quotes.

    Both are None for encodings in which those characters are not single
    bytes (UTF-16, UTF-32).
    """

    newlines: int | None
    quotes: int | None


def check_text(path: str, codec: str, *, user_encoding: bool) -> TextCounts:
    """Check the whole file decodes, counting line ends and quotes on the way.

    Run before anything is sent, so a file in the wrong encoding stops the
    run at once instead of part-way through: InputError names the line and
    byte. It decodes large blocks (fast); only on a failure does it walk the
    lines again to say where. Standard input is not read (it can be read once
    only, and is checked as it is read).
    """
    if path == "-":
        return TextCounts(None, None)
    decoder = codecs.getincrementaldecoder(codec)()
    newlines = quotes = 0
    stream, _ = open_raw(path)
    try:
        while block := stream.read(CHECK_BLOCK):
            decoder.decode(block)
            newlines += block.count(b"\n")
            quotes += block.count(b'"')
        decoder.decode(b"", final=True)
        if not splits_on_newline_byte(codec):
            return TextCounts(None, None)
        return TextCounts(newlines, quotes)
    except UnicodeDecodeError:
        pass
    finally:
        close_raw(stream)
    stream, _ = open_raw(path)
    try:
        for _ in Lines(path, stream, codec, user_encoding=user_encoding).chunks():
            pass
    finally:
        close_raw(stream)
    raise InputError(f"{path}: is not valid {codec}; check --encoding")
