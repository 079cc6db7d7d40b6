"""Parquet and Excel outputs, written when a run completes.

These formats cannot be appended to safely, so the durable record of the run
is a JSON Lines journal beside the output (``OUTPUT.journal.jsonl``); the
Parquet or Excel file is written from it, whole, once every row has a
record, and rewritten if a later session changes any record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from .text import JsonlSink, spreadsheet_safe

INT_FIELDS = ("row", "http_status", "attempts", "latency_ms")
CHUNK = 50_000


class JournalSink(JsonlSink):
    """A JSONL journal that becomes another format at the end."""

    def __init__(self, path: str, fields: tuple[str, ...] | list[str]) -> None:
        super().__init__(path + ".journal.jsonl", fields)
        self.final_path = path

    def _chunks(self) -> Iterator[list[dict[str, Any]]]:
        chunk: list[dict[str, Any]] = []
        for scanned in self.scan(0):
            chunk.append(scanned.fields)
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class ParquetSink(JournalSink):
    """Parquet output: result columns typed, input columns as text."""

    extension = ".parquet"

    def finish(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {"resent": pa.bool_(), **{name: pa.int64() for name in INT_FIELDS}}
        schema = pa.schema(
            [(name, types.get(name, pa.string())) for name in self.fields]
        )
        temporary = self.final_path + ".tmp"
        with pq.ParquetWriter(temporary, schema) as writer:
            for chunk in self._chunks():
                columns = {
                    name: [_cell(name, record.get(name)) for record in chunk]
                    for name in self.fields
                }
                writer.write_table(pa.table(columns, schema=schema))
        os.replace(temporary, self.final_path)


def _cell(name: str, value: Any) -> Any:
    if name in INT_FIELDS or name == "resent":
        return value
    return _text(value)


class ExcelSink(JournalSink):
    """Excel output, with text cells made spreadsheet-safe."""

    extension = ".xlsx"

    def finish(self) -> None:
        from openpyxl import Workbook

        workbook = Workbook(write_only=True)
        sheet = workbook.create_sheet("results")
        sheet.append([spreadsheet_safe(name) for name in self.fields])
        for chunk in self._chunks():
            for record in chunk:
                sheet.append(
                    [_excel_cell(name, record.get(name)) for name in self.fields]
                )
        temporary = self.final_path + ".tmp.xlsx"
        workbook.save(temporary)
        os.replace(temporary, self.final_path)


def _excel_cell(name: str, value: Any) -> Any:
    if name in INT_FIELDS or name == "resent":
        return value
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    text = _text(value)
    if isinstance(text, str):
        text = ILLEGAL_CHARACTERS_RE.sub("\ufffd", text)
    return spreadsheet_safe(text)
