"""JSON Lines input: one JSON object per line, values keeping their JSON types.

Integers stay exact however large, nested arrays and objects pass through,
and NaN, Infinity or a number too large for a float make the row invalid,
since request bodies must be strict JSON. A line that is not a JSON object
becomes an invalid row and the run goes on.

The standard library parses the lines: orjson, measured, was no faster once
made exact, since it reads integers past 64 bits as floats and finding such
lines beforehand costs what it saves.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..rows import Row
from . import textio
from .base import Position, Source

if TYPE_CHECKING:
    from . import SourceOptions

log = logging.getLogger("batchrun.sources")

JSON_KINDS = {
    list: "a JSON array",
    str: "a JSON string",
    bool: "a JSON boolean",
    int: "a JSON number",
    float: "a JSON number",
    type(None): "JSON null",
}


class NotFinite(ValueError):
    """A number that strict JSON cannot carry (NaN, Infinity, overflow)."""


def _reject_constant(name: str) -> Any:
    raise NotFinite(f"{name} is not allowed in strict JSON; use null or a number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NotFinite(f"the number {text} is too large for a float")
    return value


_decoder = json.JSONDecoder(parse_float=_finite_float, parse_constant=_reject_constant)


def parse_line(text: str) -> Any:
    """Parse one line of JSON exactly; raise ValueError (or NotFinite) if it is not."""
    return _decoder.decode(text)


def describe_problem(exc: Exception) -> str:
    """A short reason for a line that does not parse."""
    if isinstance(exc, NotFinite):
        return str(exc)
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


class JsonlSource(Source):
    """Reads JSON Lines, streaming; the file has no header (``columns`` is None)."""

    def __init__(self, path: str, fmt: str, options: SourceOptions) -> None:
        super().__init__(path, fmt, options)
        self.codec = textio.codec_name(options.encoding)
        self._counts = textio.TextCounts(None, None)
        self._used = False

    def check(self) -> None:
        self._counts = textio.check_text(
            self.path, self.codec, user_encoding=self.options.encoding is not None
        )

    def estimated_rows(self) -> int | None:
        return self._counts.newlines  # blank lines count too: an estimate

    def batches(self, start: Position | None = None) -> Iterator[list[Row]]:
        """Yield row batches, seeking to ``start.offset`` when the file allows."""
        if self.path == "-" and self._used:
            raise InputError(
                "standard input can be read only once; save the input to a file"
            )
        self._used = True
        stream, seekable = textio.open_raw(self.path)
        try:
            number, skip, line = 0, 0, 0
            offset = start.offset if start is not None else None
            if start is not None and start.row > 0:
                if offset is not None and seekable and self._can_seek(offset):
                    stream.seek(offset)
                    number, line = start.row, start.line
                else:
                    skip, offset = start.row, None
            lines = textio.Lines(
                self.path,
                stream,
                self.codec,
                offset=offset or 0,
                line=line,
                user_encoding=self.options.encoding is not None,
            )
            seekable = seekable and lines.tracks_offsets
            yield from self._read(lines, number, skip, seekable)
        finally:
            textio.close_raw(stream)

    def _can_seek(self, offset: int) -> bool:
        if textio.is_line_start(self.path, offset):
            return True
        log.warning(
            "%s: byte offset %d is not the start of a line; the file may have "
            "changed, so reading from the start",
            self.path,
            offset,
        )
        return False

    def _read(
        self, lines: textio.Lines, number: int, skip: int, seekable: bool
    ) -> Iterator[list[Row]]:
        size = self.batch_size
        first_line = lines.first_line
        batch: list[Row] = []
        for chunk in lines.chunks():
            ends, base = lines.ends, lines.base
            for index, text in enumerate(chunk):
                if not text or text.isspace():
                    continue
                number += 1
                if number <= skip:
                    continue
                line = first_line + base + index + 1
                row = self._row(number, line, text)
                if seekable:
                    row.offset = ends[index + 1]
                batch.append(row)
                if len(batch) >= size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _row(self, number: int, line: int, text: str) -> Row:
        try:
            value = parse_line(text)
        except (ValueError, RecursionError) as exc:
            if number == 1:
                self._check_not_json_document(text, line)
            reason = describe_problem(exc)
            return Row(number, line, None, f"line {line}: not valid JSON ({reason})")
        if not isinstance(value, dict):
            kind = JSON_KINDS.get(type(value), "a JSON value")
            return Row(number, line, None, f"line {line}: {kind}, expected an object")
        return Row(number, line, value)

    def _check_not_json_document(self, text: str, line: int) -> None:
        """Raise if the first line starts a JSON document spread over lines."""
        head = text.strip()
        if head == "{" or head.startswith("["):
            raise InputError(
                f"{self.path}, line {line}: the file holds one JSON document spread "
                "over lines, not JSON Lines; write one JSON object per line "
                "(for example with jq -c '.[]')"
            )
