"""Output writers, one per format, chosen by the output's extension."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..errors import UsageError
from .base import RESULT_FIELDS, Record, ScannedRecord, Sink
from .columnar import ExcelSink, ParquetSink
from .text import CsvSink, JsonlSink, spreadsheet_safe

__all__ = [
    "RESULT_FIELDS",
    "Record",
    "ScannedRecord",
    "Sink",
    "open_sink",
    "spreadsheet_safe",
]

SINKS: dict[str, type[Sink]] = {
    ".csv": CsvSink,
    ".jsonl": JsonlSink,
    ".ndjson": JsonlSink,
    ".parquet": ParquetSink,
    ".xlsx": ExcelSink,
}


def open_sink(path: str, fields: Sequence[str]) -> Sink:
    """Return the writer for ``path``'s extension (not yet opened)."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in SINKS:
        raise UsageError(
            f"output {path!r}: unknown extension {extension or '(none)'!r}; "
            f"name it .csv, .jsonl, .parquet or .xlsx"
        )
    return SINKS[extension](path, fields)
