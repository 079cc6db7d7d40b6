"""CSV and JSONL outputs: appended record by record, read back for resume."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import CheckpointError
from .base import Record, ScannedRecord, Sink

# A spreadsheet runs text starting with these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def is_plain_number(text: str) -> bool:
    """True for text such as "-5" or "+1.5e3" that a spreadsheet shows as a number."""
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text and text.lower().lstrip("+-") not in (
        "inf",
        "nan",
        "infinity",
    )


def csv_cell(value: Any) -> Any:
    """A value as CSV holds it: booleans as true/false, arrays and objects as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def spreadsheet_safe(value: Any) -> Any:
    """Text as a spreadsheet will show it, never run as a formula.

    Text cells beginning with =, +, -, @, tab or carriage return get a leading
    apostrophe (the spreadsheet convention for "this is text"); plain numbers
    such as -5 are left alone. Other values pass through.
    """
    value = csv_cell(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        if not is_plain_number(value):
            return "'" + value
    return value


class TornTail(Exception):
    """The bytes from here to the end of the file are not a complete record."""


class CsvSink(Sink):
    """CSV output with a header row; text cells are made spreadsheet-safe."""

    extension = ".csv"

    def header(self) -> bytes:
        return self.encode([self.fields])

    def encode(self, records: Sequence[Record]) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        safe = spreadsheet_safe
        writer.writerows([[safe(value) for value in record] for record in records])
        return buffer.getvalue().encode("utf-8")

    def stored_fields(self) -> tuple[str, ...]:
        return tuple(spreadsheet_safe(name) for name in self.fields)

    def read_fields(self) -> tuple[str, ...] | None:
        with open(self.path, encoding="utf-8", newline="") as file:
            header = next(csv.reader(file), None)
        return tuple(header) if header else None

    def scan(self, start: int) -> Iterator[ScannedRecord]:
        with open(self.path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            file.seek(start)
            yield from _scan_csv(file, start, size, self.fields, self.path)


def _scan_csv(
    file: io.BufferedReader, start: int, size: int, fields: tuple[str, ...], path: str
) -> Iterator[ScannedRecord]:
    state = {"consumed": start, "newline": True}

    def lines() -> Iterator[str]:
        for raw in file:
            state["consumed"] += len(raw)
            state["newline"] = raw.endswith(b"\n")
            yield raw.decode("utf-8")

    reader = csv.reader(lines(), strict=True)
    row_at, status_at = fields.index("row"), fields.index("status")
    offset = start
    while True:
        try:
            values = next(reader)
            complete = state["newline"] and len(values) == len(fields)
            row = int(values[row_at]) if complete else 0
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError, ValueError):
            complete = False
        if not complete:
            _torn_or_damaged(path, offset, int(state["consumed"]), size)
            return
        end = int(state["consumed"])
        yield ScannedRecord(
            offset, end, row, values[status_at], dict(zip(fields, values, strict=False))
        )
        offset = end


def _torn_or_damaged(path: str, offset: int, consumed: int, size: int) -> None:
    """Accept a bad record only at the very end of the file (a torn write)."""
    if consumed < size:
        raise CheckpointError(
            f"{path}: the record at byte {offset} is damaged and more records "
            "follow, so the output cannot be trusted for resume; pass --restart "
            "to start over (the old output is kept)"
        )


class JsonlSink(Sink):
    """JSON Lines output: one object per record, values keep their types."""

    extension = ".jsonl"

    def header(self) -> bytes:
        return b""

    def encode(self, records: Sequence[Record]) -> bytes:
        fields = self.fields
        dumps = json.dumps
        lines = [
            dumps(dict(zip(fields, record, strict=True)), ensure_ascii=False)
            for record in records
        ]
        lines.append("")
        return "\n".join(lines).encode("utf-8")

    def read_fields(self) -> tuple[str, ...] | None:
        return self.fields  # every record names its own fields

    def scan(self, start: int) -> Iterator[ScannedRecord]:
        with open(self.path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            file.seek(start)
            offset = start
            for raw in file:
                end = offset + len(raw)
                try:
                    if not raw.endswith(b"\n"):
                        raise ValueError("torn")
                    record = json.loads(raw)
                    row, status = record["row"], record["status"]
                except (ValueError, TypeError, KeyError):
                    record = None
                if record is None or not isinstance(row, int):
                    _torn_or_damaged(self.path, offset, end, size)
                    return
                yield ScannedRecord(offset, end, row, status, record)
                offset = end
