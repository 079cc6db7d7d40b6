"""The failed-rows file: the rows to fix, as the input held them, plus why.

After a run whose output holds failed or invalid rows, batchrun writes those
rows (their last record decides) next to the output, in a form that can be
fixed in a spreadsheet and fed straight back in as input: CSV with the
input's own header for tabular inputs, JSON Lines for JSON Lines input. One
column is added, ``batchrun_error``; a run never sends a column of that name.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

from .errors import OutputError
from .sinks import Sink
from .sinks.text import csv_cell
from .sources import SourceOptions, open_source
from .variables import ERROR_COLUMN

STATUSES = ("failed", "invalid")


def default_path(output: str, input_format: str) -> str:
    """OUTPUT's name with ``.failed.csv`` (or ``.failed.jsonl``) instead."""
    root = output
    for suffix in (".journal.jsonl",):
        if root.endswith(suffix):
            root = root[: -len(suffix)]
    root = os.path.splitext(root)[0]
    return root + (".failed.jsonl" if input_format == "jsonl" else ".failed.csv")


def failed_rows(sink: Sink) -> dict[int, str]:
    """Row number -> error, for rows whose last record is failed or invalid."""
    last: dict[int, tuple[str, str]] = {}
    for record in sink.scan(len(sink.header())):
        status = record.status
        if status in STATUSES:
            last[record.row] = (status, str(record.fields.get("error") or status))
        elif record.row in last:
            del last[record.row]
    return {row: error for row, (_, error) in last.items()}


def write_failed(
    input_path: str,
    options: SourceOptions,
    rows: dict[int, str],
    target: str,
) -> int:
    """Write the rows numbered in ``rows`` to ``target``; return how many."""
    if not rows:
        if os.path.exists(target):
            os.remove(target)  # an older list would be wrong now
        return 0
    temporary = target + ".tmp"
    written = 0
    try:
        with open_source(input_path, options) as source:
            columns = source.columns
            with open(temporary, "w", encoding="utf-8", newline="") as file:
                if columns is None:
                    write = _jsonl_writer(file)
                else:
                    kept = [name for name in columns if name != ERROR_COLUMN]
                    write = _csv_writer(file, kept)
                for batch in source.batches():
                    for row in batch:
                        error = rows.get(row.number)
                        if error is not None:
                            write(row.values or row.raw, error)
                            written += 1
        os.replace(temporary, target)
    except OSError as exc:
        raise OutputError(
            f"{target}: cannot write the failed-rows file ({exc.strerror})"
        ) from exc
    return written


def _csv_writer(file: Any, columns: list[str]) -> Any:
    writer = csv.writer(file, lineterminator="\r\n")
    writer.writerow([*columns, ERROR_COLUMN])

    def write(values: dict[str, Any] | list[str] | None, error: str) -> None:
        if isinstance(values, list):  # a row with the wrong number of fields
            cells = values + [""] * (len(columns) - len(values))
            writer.writerow([*cells, error])
            return
        values = values or {}
        writer.writerow([csv_cell(values.get(name)) for name in columns] + [error])

    return write


def _jsonl_writer(file: Any) -> Any:
    def write(values: dict[str, Any] | list[str] | None, error: str) -> None:
        record = dict(values) if isinstance(values, dict) else {}
        record[ERROR_COLUMN] = error
        file.write(json.dumps(record, ensure_ascii=False) + "\n")

    return write
