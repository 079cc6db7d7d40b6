"""Reading a run's output: CSV, JSON Lines, Parquet or Excel, record by record.

``Reading`` streams the file a run wrote with ``-o`` (or, for Parquet and
Excel, its newer journal) as typed ``Record`` tuples, so memory stays flat
however many records it holds. Damaged records are counted and skipped, and a
last record cut short by a stopped run is noted as a torn tail. ``safe_text``
makes text from the data fit to show.
"""

from __future__ import annotations

import csv
import json
import os
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from ..errors import InputError
from ..redact import clean_message

STATUSES = ("succeeded", "failed", "invalid", "unknown")
FIELDS = (
    "row",
    "key",
    "status",
    "http_status",
    "error",
    "attempts",
    "resent",
    "started_at",
    "latency_ms",
)
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
FINAL_FORMATS = {".parquet": "parquet", ".xlsx": "xlsx"}
FORMAT_NAMES = {
    "csv": "CSV",
    "jsonl": "JSON Lines",
    "parquet": "Parquet",
    "xlsx": "Excel",
}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
EXAMPLE_LIMIT = 300
PARQUET_BATCH = 65_536
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)

# ---------------------------------------------------------------- clean text


def safe_text(text: str, limit: int = EXAMPLE_LIMIT) -> str:
    """Text from the data made safe to show: one line, printable, no credentials."""
    return clean_message(text, limit=limit)


# ------------------------------------------------------------------- records


class Record(NamedTuple):
    """The fields of one output record that the report uses, typed."""

    row: int
    ident: int | str
    status: str
    http_status: int | None
    error: str | None
    attempts: int
    resent: bool
    started_ms: int | None
    latency_ms: int | None


class Damaged(ValueError):
    """A record whose values are not what batchrun writes."""


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Damaged(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise Damaged(value)
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Damaged(value) from None


def _text(value: Any) -> str | None:
    """A text cell as written, without the apostrophe spreadsheets needed."""
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else str(value)
    if text.startswith("'") and text[1:].startswith(FORMULA_STARTS):
        return text[1:]
    return text


def _epoch_ms(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // MILLISECOND


def to_record(raw: tuple[Any, ...]) -> Record:
    """Type one record's raw values (in FIELDS order); raise Damaged if odd."""
    row, key, status, http_status, error, attempts, resent, started, latency = raw
    row = _int(row)
    if row is None or row < 1 or status not in STATUSES:
        raise Damaged(row)
    key = _text(key)
    latency = _int(latency)
    return Record(
        row,
        key if key is not None else row,
        status,
        _int(http_status),
        _text(error),
        _int(attempts) or 0,
        resent is True or str(resent).lower() in ("true", "1"),
        _epoch_ms(started),
        latency if latency is not None and latency >= 0 else None,
    )


# ------------------------------------------------------------------- readers


class Reading:
    """One output file to read, as often as needed, with what reading found."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.path, self.format = _locate(output)
        self.damaged = 0
        self.torn_tail = False
        readers: dict[str, Callable[[], Iterator[tuple[Any, ...]]]] = {
            "csv": self._csv,
            "jsonl": self._jsonl,
            "parquet": self._parquet,
            "xlsx": self._xlsx,
        }
        self._read = readers[self.format]

    def records(self) -> Iterator[Record]:
        """Every complete record in file order; damaged ones are only counted."""
        self.damaged, self.torn_tail = 0, False
        try:
            for raw in self._read():
                try:
                    yield to_record(raw)
                except Damaged:
                    self.damaged += 1
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read it ({exc.strerror})") from exc

    def _not_ours(self, why: str) -> InputError:
        return InputError(
            f"{self.path}: not a batchrun output ({why}); name the file a run "
            "wrote with -o"
        )

    def _positions(self, header: Any) -> list[int | None]:
        names = [str(name) if name is not None else "" for name in header or ()]
        if "row" not in names or "status" not in names:
            raise self._not_ours("it has no 'row' and 'status' columns")
        return [names.index(name) if name in names else None for name in FIELDS]

    def _csv(self) -> Iterator[tuple[Any, ...]]:
        with open(self.path, "rb") as file:
            lines = _Lines(file)
            reader = csv.reader(lines)
            try:
                header = next(reader, None)
            except csv.Error:
                raise self._not_ours("its first line is not a CSV header") from None
            positions = self._positions(header)
            width = len(header or ())
            while True:
                try:
                    values: list[str] | None = next(reader)
                except StopIteration:
                    return
                except csv.Error:
                    values = None
                if values is not None and lines.ended_line and len(values) == width:
                    yield tuple(values[i] if i is not None else None for i in positions)
                elif lines.at_end:
                    self.torn_tail = True
                    return
                else:
                    self.damaged += 1

    def _jsonl(self) -> Iterator[tuple[Any, ...]]:
        with open(self.path, "rb") as file:
            lines = _Lines(file)
            first = True
            for line in lines:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                ours = isinstance(record, dict) and "row" in record
                if ours and lines.ended_line and "status" in record:
                    first = False
                    yield tuple(record.get(name) for name in FIELDS)
                elif lines.at_end:
                    self.torn_tail = True
                elif first:
                    raise self._not_ours(
                        "line 1 is not a record with 'row' and 'status'"
                    )
                else:
                    self.damaged += 1

    def _parquet(self) -> Iterator[tuple[Any, ...]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            file = pq.ParquetFile(self.path)
            names = file.schema_arrow.names
            self._positions(names)
            present = [name for name in FIELDS if name in names]
            for batch in file.iter_batches(PARQUET_BATCH, columns=present):
                empty = [None] * batch.num_rows
                columns = [
                    batch.column(name).to_pylist() if name in present else empty
                    for name in FIELDS
                ]
                yield from zip(*columns, strict=True)
        except pa.ArrowException as exc:
            raise self._not_ours(
                f"not a readable Parquet file: {_first_line(exc)}"
            ) from exc

    def _xlsx(self) -> Iterator[tuple[Any, ...]]:
        from openpyxl import load_workbook

        try:
            workbook = load_workbook(self.path, read_only=True, data_only=True)
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
            raise self._not_ours(
                f"not a readable Excel file: {_first_line(exc)}"
            ) from exc
        try:
            names = workbook.sheetnames
            sheet = workbook["results" if "results" in names else names[0]]
            rows = sheet.iter_rows(values_only=True)
            positions = self._positions(next(rows, None))
            for values in rows:
                if all(value is None for value in values):
                    continue
                yield tuple(
                    values[i] if i is not None and i < len(values) else None
                    for i in positions
                )
        finally:
            workbook.close()


class _Lines:
    """The lines of a file as it was when opened, noting where the last one ended.

    A record still being appended while the report reads is thereby a torn
    tail, like a record cut by a killed run.
    """

    def __init__(self, file: Any) -> None:
        self._file = file
        self._left = os.fstat(file.fileno()).st_size
        self.ended_line = True

    @property
    def at_end(self) -> bool:
        return self._left <= 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self._left <= 0:
            raise StopIteration
        raw = self._file.readline()[: self._left]
        if not raw:
            self._left = 0
            raise StopIteration
        self._left -= len(raw)
        self.ended_line = raw.endswith(b"\n")
        return str(raw.decode("utf-8", "replace"))


def _first_line(exc: BaseException) -> str:
    return safe_text(str(exc).strip().splitlines()[0] if str(exc).strip() else "", 160)


def _locate(output: str) -> tuple[str, str]:
    """The file to read for ``output`` and its format.

    A Parquet or Excel output is written whole when the run completes; until
    then, or when a later session added records, its journal is newer and is
    read instead.
    """
    extension = os.path.splitext(output)[1].lower()
    if extension not in FORMATS and extension not in FINAL_FORMATS:
        raise InputError(
            f"{output}: unknown extension {extension or '(none)'!r}; a batchrun "
            "output is .csv, .jsonl, .parquet or .xlsx"
        )
    path, fmt = output, FORMATS.get(extension) or FINAL_FORMATS[extension]
    journal = output + ".journal.jsonl"
    if extension in FINAL_FORMATS and os.path.isfile(journal):
        if not os.path.exists(output) or _mtime(journal) > _mtime(output):
            path, fmt = journal, "jsonl"
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory; name the output file of a run")
    if not os.path.exists(path):
        raise InputError(
            f"{path}: no such file; name the output file of a run (its -o)"
        )
    return path, fmt


def _mtime(path: str) -> int:
    return os.stat(path).st_mtime_ns
