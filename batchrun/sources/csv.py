"""CSV and TSV input: every cell is the exact text of the file.

No cell is ever converted: "00123", "1e5", "NA" and "" reach the mapping
layer as the same text. The first non-blank record is the header. Blank
lines, whitespace-only lines and records whose cells are all empty are
skipped and not counted as rows. A record with the wrong number of fields
becomes an invalid row and the run goes on.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING

from ..errors import InputError
from ..rows import Row
from . import textio
from .base import Position, Source

if TYPE_CHECKING:
    from . import SourceOptions

log = logging.getLogger("batchrun.sources")

DELIMITERS = (",", ";", "\t", "|")
SAMPLE_CHARS = 64 * 1024
# Python's default limit (128 Ki characters) is too small for documents
# pasted into a cell; the limit is process-wide, so it is only ever raised.
FIELD_LIMIT = 64 * 1024 * 1024


def detect_delimiter(lines: list[str], truncated: bool = False) -> str:
    """Guess the delimiter from sample lines; "," when nothing fits better.

    Each candidate splits the sample into records; the one whose header has
    two or more fields and whose records most often match the header's field
    count wins, then the one giving more fields. ``truncated`` says the last
    sample line may end inside a record, which is then left out.
    """
    best, best_score = ",", (0.0, 0)
    for delimiter in DELIMITERS:
        try:
            records = list(csv.reader(lines, delimiter=delimiter))
        except csv.Error:
            continue
        if truncated:
            records = records[:-1]
        counts = [len(record) for record in records if not is_blank(record)]
        if not counts or counts[0] < 2:
            continue
        agreeing = sum(count == counts[0] for count in counts) / len(counts)
        score = (agreeing, counts[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def is_blank(record: list[str]) -> bool:
    """True for an empty line, a whitespace-only line or all-empty cells."""
    return not "".join(record).strip()


def sample_lines(lines: list[str]) -> tuple[list[str], bool]:
    """The leading lines holding about SAMPLE_CHARS, and whether any were left."""
    size = 0
    for index, line in enumerate(lines):
        size += len(line)
        if size >= SAMPLE_CHARS:
            return lines[: index + 1], index + 1 < len(lines)
    return lines, False


@dataclass
class _Pass:
    """One reading of the file: its stream, its lines and the CSV reader."""

    stream: textio.RawStream
    lines: textio.Lines
    reader: Iterator[list[str]]

    @property
    def consumed(self) -> int:
        """Physical lines the reader has taken so far."""
        return self.reader.line_num  # type: ignore[attr-defined, no-any-return]


class CsvSource(Source):
    """Reads CSV ("csv") or tab-separated ("tsv") text, streaming."""

    def __init__(self, path: str, fmt: str, options: SourceOptions) -> None:
        super().__init__(path, fmt, options)
        if csv.field_size_limit() < FIELD_LIMIT:
            csv.field_size_limit(FIELD_LIMIT)
        self.codec = textio.codec_name(options.encoding)
        self._counts = textio.TextCounts(None, None)
        self.delimiter = options.delimiter or ("\t" if fmt == "tsv" else None)
        self._columns: list[str] = []
        self._header_offset = 0
        self._seekable = False
        self._opened = 0
        self._pending: _Pass | None = self._open()

    @property
    def columns(self) -> list[str]:
        """The header's column names, in file order."""
        return list(self._columns)

    def batches(self, start: Position | None = None) -> Iterator[list[Row]]:
        """Yield row batches, seeking to ``start.offset`` when the file allows."""
        current, self._pending = self._pending or self._open(), None
        number, skip = 0, 0
        try:
            if start is not None and start.row > 0:
                number, skip = self._resume_plan(start)
                if number:
                    textio.close_raw(current.stream)
                    current = self._open_at(start)
            yield from self._read(current, number, skip)
        finally:
            textio.close_raw(current.stream)

    def check(self) -> None:
        self._counts = textio.check_text(
            self.path, self.codec, user_encoding=self.options.encoding is not None
        )
        if not (self._counts.quotes or 0) % 2:
            return
        # Every well-formed quoted field holds an even number of quote
        # characters, so an odd total means a quote that never closes. Find
        # it with the reader itself, which names the line.
        with CsvSource(self.path, self.format, self.options) as again:
            for _ in again.batches():
                pass

    def estimated_rows(self) -> int | None:
        newlines = self._counts.newlines
        return None if newlines is None else max(newlines - 1, 0)  # the header

    def close(self) -> None:
        if self._pending is not None:
            textio.close_raw(self._pending.stream)
            self._pending = None

    def _resume_plan(self, start: Position) -> tuple[int, int]:
        """(first number, rows to skip): seek when the offset is usable."""
        if start.offset is None or not self._seekable:
            return 0, start.row
        if self._is_line_start(start.offset):
            return start.row, 0
        log.warning(
            "%s: byte offset %d is not the start of a line; the file may have "
            "changed, so reading from the start and skipping %d rows",
            self.path,
            start.offset,
            start.row,
        )
        return 0, start.row

    def _is_line_start(self, offset: int) -> bool:
        return offset >= self._header_offset and textio.is_line_start(self.path, offset)

    def _open(self) -> _Pass:
        """Open the file, settle the delimiter and read the header."""
        if self.path == "-" and self._opened:
            raise InputError(
                "standard input can be read only once; save the input to a file"
            )
        self._opened += 1
        stream, seekable = textio.open_raw(self.path)
        try:
            lines = textio.Lines(
                self.path,
                stream,
                self.codec,
                user_encoding=self.options.encoding is not None,
            )
            chunks = lines.chunks()
            first = next(chunks, [])
            if self.delimiter is None:
                self.delimiter = detect_delimiter(*sample_lines(first))
            rows = chain.from_iterable(chain((first,), chunks))
            current = _Pass(stream, lines, self._reader(rows))
            self._columns = self._read_header(current)
        except BaseException:
            textio.close_raw(stream)
            raise
        self._seekable = seekable and lines.tracks_offsets
        if lines.tracks_offsets:
            self._header_offset = lines.ends[current.consumed - lines.base]
        return current

    def _open_at(self, start: Position) -> _Pass:
        """Open the file at ``start.offset``, just past an already done row."""
        stream, _ = textio.open_raw(self.path)
        stream.seek(start.offset or 0)
        lines = textio.Lines(
            self.path,
            stream,
            self.codec,
            offset=start.offset or 0,
            line=start.line,
            user_encoding=self.options.encoding is not None,
        )
        rows = chain.from_iterable(lines.chunks())
        return _Pass(stream, lines, self._reader(rows))

    def _reader(self, rows: Iterator[str]) -> Iterator[list[str]]:
        return csv.reader(rows, delimiter=self.delimiter or ",", strict=False)

    def _read_header(self, current: _Pass) -> list[str]:
        for line, _, record in self._records(current):
            if is_blank(record):
                continue
            self._check_header(record, line)
            return record
        raise InputError(
            f"{self.path}: the file is empty; its first line must be a header row "
            "naming the columns"
        )

    def _check_header(self, names: list[str], line: int) -> None:
        unnamed = [
            str(index) for index, name in enumerate(names, 1) if not name.strip()
        ]
        if unnamed:
            raise InputError(
                f"{self.path}, line {line}: header column(s) {', '.join(unnamed)} "
                "have no name; give every column a name in the header row"
            )
        seen: dict[str, list[int]] = {}
        for index, name in enumerate(names, 1):
            seen.setdefault(name, []).append(index)
        repeated = [
            f"{name!r} (columns {', '.join(map(str, places))})"
            for name, places in seen.items()
            if len(places) > 1
        ]
        if repeated:
            raise InputError(
                f"{self.path}, line {line}: the header repeats column names: "
                f"{'; '.join(repeated)}; rename them so every column is unique"
            )

    def _records(self, current: _Pass) -> Iterator[tuple[int, int, list[str]]]:
        """(first line, lines consumed, record) for each record the reader gives.

        The reader never reads past the record it returns, so the lines it has
        consumed end exactly at that record; parse problems become InputError.
        """
        lines, reader = current.lines, current.reader
        first_line = lines.first_line
        previous = current.consumed
        try:
            for record in reader:
                line = first_line + previous + 1
                previous = reader.line_num  # type: ignore[attr-defined]
                if lines.exhausted:
                    # The reader asked for more lines in mid-record: a quote
                    # was opened and never closed.
                    raise InputError(
                        f"{self.path}, line {line}: a quoted field starting on this "
                        'line has no closing quote; check for a stray " character'
                    )
                yield line, previous, record
        except csv.Error as exc:
            line = first_line + current.consumed
            raise InputError(f"{self.path}, line {line}: {_explain(exc)}") from None

    def _read(self, current: _Pass, number: int, skip: int) -> Iterator[list[Row]]:
        """The data rows after the header (or after ``start``), in batches.

        This loop runs once per row, so it keeps to local names.
        """
        columns = self._columns
        width = len(columns)
        size = self.batch_size
        seekable = self._seekable
        lines = current.lines
        expected = f"expected {width} (header has {width} columns)"
        batch: list[Row] = []
        for line, end, record in self._records(current):
            head = record[0] if record else ""
            if (not head or head.isspace()) and is_blank(record):
                continue
            number += 1
            if number <= skip:
                continue
            offset = lines.ends[end - lines.base] if seekable else None
            if len(record) == width:
                values = dict(zip(columns, record))  # noqa: B905 - lengths match
                batch.append(Row(number, line, values, None, offset))
            else:
                error = f"line {line}: {len(record)} fields, {expected}"
                batch.append(Row(number, line, None, error, offset, record))
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch


def _explain(exc: csv.Error) -> str:
    text = str(exc)
    if "new-line character" in text:
        return (
            "a carriage return alone ends a line; save the file with LF or CRLF "
            "line ends"
        )
    if "field larger than field limit" in text:
        return f"a field is longer than {FIELD_LIMIT // 1024 // 1024} MiB of text"
    return f"cannot be read as CSV ({text}); check the quoting or pass --delimiter"
