"""`batchrun report`: what a run's output file says, summed up.

The output is read as a stream, so memory stays flat however many records it
holds: counts by status, HTTP status and kind of error, latency percentiles,
rows finished over time, retries and rows in doubt. The summary is one
JSON-ready dict that the text, ``--json`` and ``--html`` renderings share.

Precision: latency percentiles come from log-spaced buckets with exact
counts; values under 256 ms are exact, larger ones within 0.4% (the maximum
is exact). Rows per time bucket are exact. When a row has more than one
record (an interrupted ``--retry-failed`` leaves them until it settles), only
its last record counts; finding those rows reads the file a second time.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, NamedTuple

import click

from .errors import BatchrunError, InputError, UsageError

__all__ = ["analyse", "render_text", "report"]

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
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PERCENTILES = (50, 90, 99)
TOP_ERRORS = 10
MAX_ERROR_KINDS = 1000  # rows with kinds past this many are counted as "other"
EXAMPLE_LIMIT = 300
UNKNOWN_LISTED = 20
PARQUET_BATCH = 65_536
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)

# ---------------------------------------------------------------- clean text

_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]+")
_ID = re.compile(
    r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
    r"|\b[0-9a-f]{16,}\b"
)
# A number that is not an HTTP status: "line 7", "after 5 attempts", "2.5 s".
_NUMBER = re.compile(r"(?<!HTTP )\b\d+(?:\.\d+)*")


def safe_text(text: str, limit: int = EXAMPLE_LIMIT) -> str:
    """Text from the data made safe to show: one line, printable, no credentials."""
    text = _BEARER.sub(r"\1[redacted]", text)
    text = " ".join(_UNPRINTABLE.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_kind(error: str) -> str:
    """Group an error with its like by dropping row-specific numbers and ids."""
    return _NUMBER.sub("N", _ID.sub("ID", safe_text(error)))


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
                    raise self._not_ours("line 1 is not a record with 'row' and 'status'")
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
            raise self._not_ours(f"not a readable Parquet file: {_first_line(exc)}") from exc

    def _xlsx(self) -> Iterator[tuple[Any, ...]]:
        from openpyxl import load_workbook

        try:
            workbook = load_workbook(self.path, read_only=True, data_only=True)
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
            raise self._not_ours(f"not a readable Excel file: {_first_line(exc)}") from exc
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


# ---------------------------------------------------------------- statistics

EXACT_BELOW = 256  # latencies under this many ms each have their own bucket
SUB_BUCKETS = 128  # buckets per power of two above that: 1/128 wide at most


class LatencyHistogram:
    """Latency counts in log-spaced buckets: exact under 256 ms, within 0.4% above.

    Each power of two above 256 ms is split into 128 equal buckets, so a
    bucket is at most 1/128 of its lower bound wide and its middle is within
    1/256 of any value in it. A few thousand buckets cover a year.
    """

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.count = 0
        self.low: int | None = None
        self.high = 0

    def add(self, ms: int) -> None:
        if ms < EXACT_BELOW:
            index = ms
        else:
            shift = ms.bit_length() - 8
            index = EXACT_BELOW + (shift - 1) * SUB_BUCKETS + (ms >> shift) - 128
        self.counts[index] += 1
        self.count += 1
        self.high = max(self.high, ms)
        self.low = ms if self.low is None else min(self.low, ms)

    def merged(self, other: LatencyHistogram) -> LatencyHistogram:
        both = LatencyHistogram()
        both.counts = self.counts + other.counts
        both.count = self.count + other.count
        both.high = max(self.high, other.high)
        lows = [low for low in (self.low, other.low) if low is not None]
        both.low = min(lows) if lows else None
        return both

    def buckets(self) -> Iterator[tuple[int, int, int]]:
        """(lowest ms, highest ms, count) of every non-empty bucket, in order."""
        for index in sorted(self.counts):
            if index < EXACT_BELOW:
                yield index, index, self.counts[index]
                continue
            shift, step = divmod(index - EXACT_BELOW, SUB_BUCKETS)
            low = (step + 128) << (shift + 1)
            yield low, low + (1 << (shift + 1)) - 1, self.counts[index]

    def percentile(self, percent: int) -> int | None:
        """The nearest-rank percentile: the smallest value at or above percent%."""
        if not self.count:
            return None
        rank = max(1, -(-percent * self.count // 100))
        seen = 0
        for low, high, count in self.buckets():
            seen += count
            if seen >= rank:
                middle = (low + high + 1) // 2
                return min(max(middle, self.low or 0), self.high)
        return self.high

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = {"count": self.count}
        for percent in PERCENTILES:
            result[f"p{percent}"] = self.percentile(percent)
        result["max"] = self.high if self.count else None
        return result


# Bucket widths in ms. Each is a multiple of the one before, so counts kept
# at one width add up exactly into any wider one; past the end they double.
WIDTHS_MS = (
    10, 20, 100, 200, 1_000, 2_000, 10_000, 20_000, 60_000, 120_000, 600_000,
    1_200_000, 3_600_000, 7_200_000, 21_600_000, 43_200_000, 86_400_000,
    604_800_000,
)  # fmt: skip
KEPT_BUCKETS = 4096
SHOWN_BUCKETS = 60


def width_ms(level: int) -> int:
    """The bucket width of a level of WIDTHS_MS (doubling past its end)."""
    last = len(WIDTHS_MS) - 1
    return WIDTHS_MS[min(level, last)] << max(0, level - last)


class Throughput:
    """Rows finished per time bucket, aligned to UTC, in at most 4,096 buckets.

    Buckets start 10 ms wide and widen to the next width whenever the rows
    seen span more than KEPT_BUCKETS of them.
    """

    def __init__(self) -> None:
        self.level = 0
        self.cells: dict[int, list[int]] = {}
        self.first = 0
        self.last = 0

    def add(self, finished_ms: int, succeeded: bool) -> None:
        index = finished_ms // width_ms(self.level)
        cell = self.cells.get(index)
        if cell is None:
            cell = self.cells[index] = [0, 0]
            if len(self.cells) == 1:
                self.first = self.last = index
            self.first, self.last = min(self.first, index), max(self.last, index)
        cell[0 if succeeded else 1] += 1
        if self.last - self.first >= KEPT_BUCKETS:
            self._widen()

    def _widen(self) -> None:
        while self.last - self.first >= KEPT_BUCKETS:
            old, new = width_ms(self.level), width_ms(self.level + 1)
            self.level += 1
            self.cells = self._regroup(old, new)
            self.first, self.last = self.first * old // new, self.last * old // new

    def _regroup(self, old: int, new: int) -> dict[int, list[int]]:
        cells: dict[int, list[int]] = {}
        for index, (succeeded, other) in self.cells.items():
            cell = cells.setdefault(index * old // new, [0, 0])
            cell[0] += succeeded
            cell[1] += other
        return cells

    def shown(self) -> tuple[int, list[tuple[int, int, int]]]:
        """The width and (start ms, succeeded, other) of at most 60 buckets."""
        if not self.cells:
            return width_ms(self.level), []
        kept, level = width_ms(self.level), self.level
        while (self.last * kept // width_ms(level)) - (
            self.first * kept // width_ms(level)
        ) >= SHOWN_BUCKETS:
            level += 1
        width = width_ms(level)
        first = self.first * kept // width
        last = self.last * kept // width
        cells = [[0, 0] for _ in range(last - first + 1)]
        for index, (succeeded, other) in self.cells.items():
            cell = cells[index * kept // width - first]
            cell[0] += succeeded
            cell[1] += other
        return width, [
            ((first + i) * width, ok, other) for i, (ok, other) in enumerate(cells)
        ]


ROWS_IN_BITMAP = 1 << 31
BLOOM_BITS = 1 << 27  # 16 MiB; about 1% false positives at 10 million keys


class Seen:
    """Which rows have had a record: exact for row numbers, a Bloom filter for keys.

    ``add`` answers True when the row may have been seen before. Row numbers
    answer exactly (one bit each); keys may answer True wrongly about 1% of
    the time at 10 million keys, which costs only a second reading, never a
    wrong count.
    """

    def __init__(self) -> None:
        self.rows = bytearray()
        self.bloom: bytearray | None = None

    def add(self, ident: int | str) -> bool:
        if isinstance(ident, int) and 0 <= ident < ROWS_IN_BITMAP:
            byte, bit = ident >> 3, 1 << (ident & 7)
            if byte >= len(self.rows):
                self.rows.extend(bytes(max(byte + 1, 2 * len(self.rows)) - len(self.rows)))
            seen = self.rows[byte] & bit
            self.rows[byte] |= bit
            return bool(seen)
        if self.bloom is None:
            self.bloom = bytearray(BLOOM_BITS // 8)
        bloom, first, step = self.bloom, hash(ident), hash((ident, 1)) | 1
        seen = True
        for probe in range(3):
            position = (first + probe * step) % BLOOM_BITS
            byte, bit = position >> 3, 1 << (position & 7)
            seen = seen and bool(bloom[byte] & bit)
            bloom[byte] |= bit
        return seen
