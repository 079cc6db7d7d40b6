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
from bisect import bisect_right
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
FORMAT_NAMES = {
    "csv": "CSV",
    "jsonl": "JSON Lines",
    "parquet": "Parquet",
    "xlsx": "Excel",
}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PERCENTILES = (50, 90, 99)
TOP_ERRORS = 10
MAX_ERROR_KINDS = 1000  # rows with kinds past this many are counted as "other"
EXAMPLE_LIMIT = 300
UNKNOWN_LISTED = 20  # in --json and --html
UNKNOWN_SHOWN = 10  # in the text
PARQUET_BATCH = 65_536
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)

# ---------------------------------------------------------------- clean text

_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
_UNPRINTABLE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]+"
)
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
        if rank >= self.count:
            return self.high  # the maximum is kept exactly
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
    10,
    20,
    100,
    200,
    1_000,
    2_000,
    10_000,
    20_000,
    60_000,
    120_000,
    600_000,
    1_200_000,
    3_600_000,
    7_200_000,
    21_600_000,
    43_200_000,
    86_400_000,
    604_800_000,
)
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


ROWS_IN_BITMAP = 2**30
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
                self.rows.extend(
                    bytes(max(byte + 1, 2 * len(self.rows)) - len(self.rows))
                )
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


class Tally:
    """Everything the report counts, added one record at a time."""

    def __init__(self) -> None:
        self.rows = 0
        self.statuses = dict.fromkeys(STATUSES, 0)
        self.http: Counter[int] = Counter()
        self.errors: dict[str, list[Any]] = {}  # kind -> [rows, example, statuses]
        self.error_rows = 0
        self.other_error_rows = 0
        self.succeeded_ms = LatencyHistogram()
        self.other_answered_ms = LatencyHistogram()
        self.throughput = Throughput()
        self.first_start: int | None = None
        self.last_finish: int | None = None
        self.timed = 0
        self.retries = self.retried_rows = self.most_attempts = 0
        self.resent = self.resent_succeeded = 0
        self.unknown: list[str] = []

    def add(self, record: Record) -> None:
        succeeded = record.status == "succeeded"
        self.rows += 1
        self.statuses[record.status] += 1
        if record.http_status is not None:
            self.http[record.http_status] += 1
            if record.latency_ms is not None:
                histogram = self.succeeded_ms if succeeded else self.other_answered_ms
                histogram.add(record.latency_ms)
        if record.error:
            self._add_error(record.error, record.status)
        if record.started_ms is not None:
            self._add_time(record.started_ms, record.latency_ms or 0, succeeded)
        if record.attempts > 1:
            self.retries += record.attempts - 1
            self.retried_rows += 1
        self.most_attempts = max(self.most_attempts, record.attempts)
        if record.resent:
            self.resent += 1
            self.resent_succeeded += succeeded
        if record.status == "unknown" and len(self.unknown) < UNKNOWN_LISTED:
            self.unknown.append(safe_text(str(record.ident), 80))

    def _add_error(self, error: str, status: str) -> None:
        self.error_rows += 1
        kind = error_kind(error)
        entry = self.errors.get(kind)
        if entry is None:
            if len(self.errors) >= MAX_ERROR_KINDS:
                self.other_error_rows += 1
                return
            entry = self.errors[kind] = [0, safe_text(error), Counter()]
        entry[0] += 1
        entry[2][status] += 1

    def _add_time(self, started: int, latency: int, succeeded: bool) -> None:
        finished = started + latency
        self.timed += 1
        self.throughput.add(finished, succeeded)
        if self.first_start is None or started < self.first_start:
            self.first_start = started
        if self.last_finish is None or finished > self.last_finish:
            self.last_finish = finished


def analyse(output: str) -> dict[str, Any]:
    """Read an output file and return the report as a JSON-ready dict.

    Raises InputError when the file is missing, unreadable or not a batchrun
    output. Memory stays bounded: histograms and counters of fixed size, plus
    one bit per row number (or a 16 MiB filter for keyed outputs) to notice
    rows recorded twice.
    """
    reading = Reading(output)
    tally, seen = Tally(), Seen()
    latest: dict[int | str, int] = {}
    records = 0
    for records, record in enumerate(reading.records(), start=1):
        tally.add(record)
        if seen.add(record.ident):
            latest[record.ident] = records
    if latest:
        # Some rows have later records: count again, keeping only the last.
        damaged, torn_tail = reading.damaged, reading.torn_tail
        tally = Tally()
        numbered = enumerate(islice(reading.records(), records), start=1)
        for number, record in numbered:
            if latest.get(record.ident, number) == number:
                tally.add(record)
        reading.damaged, reading.torn_tail = damaged, torn_tail
    return summarise(reading, records, tally)


# ------------------------------------------------------------------- summary


def iso(ms: int) -> str:
    """UTC ISO 8601 with milliseconds, as batchrun writes started_at."""
    moment = EPOCH + timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summarise(reading: Reading, records: int, tally: Tally) -> dict[str, Any]:
    """The report as a JSON-ready dict (the shape ``--json`` prints)."""
    return {
        "output": safe_text(reading.output),
        "read": safe_text(reading.path),
        "format": reading.format,
        "records": records,
        "rows": tally.rows,
        "superseded_records": records - tally.rows,
        "damaged_records": reading.damaged,
        "torn_tail": reading.torn_tail,
        "statuses": dict(tally.statuses),
        "http_statuses": {str(code): n for code, n in sorted(tally.http.items())},
        "time": _time_summary(tally),
        "latency": _latency_summary(tally),
        "throughput": _throughput_summary(tally),
        "retries": {
            "retries": tally.retries,
            "rows": tally.retried_rows,
            "most_attempts": tally.most_attempts,
        },
        "in_doubt": {
            "resent": tally.resent,
            "resent_succeeded": tally.resent_succeeded,
            "unknown": tally.statuses["unknown"],
            "unknown_rows": tally.unknown,
        },
        "errors": _errors_summary(tally),
    }


def _time_summary(tally: Tally) -> dict[str, Any]:
    first, last = tally.first_start, tally.last_finish
    if first is None or last is None:
        return {
            "rows": 0,
            "first_start": None,
            "last_finish": None,
            "seconds": None,
            "rows_per_second": None,
        }
    seconds = (last - first) / 1000
    return {
        "rows": tally.timed,
        "first_start": iso(first),
        "last_finish": iso(last),
        "seconds": seconds,
        "rows_per_second": round(tally.timed / seconds, 3) if seconds else None,
    }


def _latency_summary(tally: Tally) -> dict[str, Any]:
    answered = tally.succeeded_ms.merged(tally.other_answered_ms)
    return {
        "precision": "exact under 256 ms, within 0.4% above; max exact",
        "succeeded": tally.succeeded_ms.summary(),
        "answered": answered.summary(),
        "histogram": latency_bins(tally.succeeded_ms, tally.other_answered_ms),
    }


def _throughput_summary(tally: Tally) -> dict[str, Any]:
    width, buckets = tally.throughput.shown()
    return {
        "bucket_seconds": width / 1000,
        "buckets": [
            {"start": iso(start), "rows": ok + other, "succeeded": ok}
            for start, ok, other in buckets
        ],
    }


def _errors_summary(tally: Tally) -> dict[str, Any]:
    ranked = sorted(tally.errors.items(), key=lambda item: (-item[1][0], item[0]))
    return {
        "rows": tally.error_rows,
        "kinds": len(tally.errors),
        "other_rows": tally.other_error_rows,
        "top": [
            {"kind": kind, "rows": rows, "example": example, "statuses": dict(statuses)}
            for kind, (rows, example, statuses) in ranked[:TOP_ERRORS]
        ],
    }


# Latency chart bins: 1, 1.5, 2, 3, 5 and 7 times each power of ten (ms).
_STEPS = (1, 1.5, 2, 3, 5, 7)


def latency_bins(
    succeeded: LatencyHistogram, other: LatencyHistogram
) -> list[dict[str, Any]]:
    """Chart bins over answered rows: log-spaced from the lowest to the highest.

    Each histogram bucket falls in the bin of its lowest value, so a bin edge
    above 256 ms may be off by up to 0.8%.
    """
    both = succeeded.merged(other)
    if both.low is None:
        return []
    edges = [0, *(_edge(step, power) for power in range(13) for step in _STEPS)]
    start = bisect_right(edges, both.low) - 1
    stop = bisect_right(edges, both.high)
    bins = [
        {"from_ms": edges[i], "to_ms": edges[i + 1], "succeeded": 0, "other": 0}
        for i in range(start, stop)
    ]
    for name, histogram in (("succeeded", succeeded), ("other", other)):
        for low, _high, count in histogram.buckets():
            bins[bisect_right(edges, low) - 1 - start][name] += count
    return bins


def _edge(step: float, power: int) -> int | float:
    edge = step * 10**power
    return int(edge) if edge == int(edge) else edge


# ---------------------------------------------------------------------- text

SPARKS = "▁▂▃▄▅▆▇█"
LABEL = 12


def format_ms(ms: float | None) -> str:
    """A latency for people: "36 ms", "1.25 s", "2.5 min"."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:g} ms"
    if ms < 60_000:
        return f"{ms / 1000:.3g} s"
    return f"{ms / 60_000:.3g} min"


def format_duration(seconds: float) -> str:
    """An elapsed time for people: "11.4 s", "12 min 5 s", "2 min", "3 h 12 min"."""
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days >= 2:
        parts = [(days, "d"), (hours, "h")]
    elif days or hours:
        parts = [(days * 24 + hours, "h"), (minutes, "min")]
    else:
        parts = [(minutes, "min"), (secs, "s")]
    return " ".join(f"{n} {unit}" for n, unit in parts if n or unit == parts[0][1])


def format_rate(rate: float) -> str:
    """Rows per second with as many digits as matter: "5,189", "26.3", "0.027"."""
    if rate >= 100:
        return f"{rate:,.0f}"
    return f"{rate:.1f}" if rate >= 10 else f"{rate:.2g}"


def share(part: int, whole: int) -> str:
    """A percentage with one decimal, "-" of nothing."""
    return f"{100 * part / whole:.1f}%" if whole else "-"


def render_text(summary: dict[str, Any]) -> str:
    """The report as a compact, aligned text block."""
    s = summary
    kind = FORMAT_NAMES[s["format"]]
    lines = [f"batchrun report: {s['read']} ({kind}, {s['records']:,} records)"]
    lines += _status_lines(s)
    lines += _time_lines(s)
    lines += _latency_lines(s["latency"])
    lines += _doubt_lines(s)
    lines += _error_lines(s["errors"])
    lines += _note_lines(s)
    return "\n".join(lines)


def _line(label: str, text: str) -> str:
    return f"{label:<{LABEL}}{text}"


def _status_lines(s: dict[str, Any]) -> list[str]:
    rows, statuses = s["rows"], s["statuses"]
    parts = [f"{name} {n:,} ({share(n, rows)})" for name, n in statuses.items() if n]
    lines = [_line("rows", f"{rows:,}" + (": " + ", ".join(parts) if parts else ""))]
    if s["http_statuses"]:
        codes = ", ".join(f"{code} ×{n:,}" for code, n in s["http_statuses"].items())
        lines.append(_line("http", codes))
    return lines


def _time_lines(s: dict[str, Any]) -> list[str]:
    time, buckets = s["time"], s["throughput"]["buckets"]
    if not time["rows"]:
        return []
    rate, first, last = (
        time["rows_per_second"],
        time["first_start"],
        time["last_finish"],
    )
    if first[:11] == last[:11]:
        last = last[11:]  # the same day: the time is enough
    span = f"{first} to {last}, {format_duration(time['seconds'])}" + (
        f", {format_rate(rate)} rows/s" if rate else ""
    )
    counts = [bucket["rows"] for bucket in buckets]
    peak = max(counts)
    sparks = "".join(
        SPARKS[(len(SPARKS) - 1) * n // peak] if n else " " for n in counts
    )
    width = format_duration(s["throughput"]["bucket_seconds"])
    return [
        _line("time", span),
        _line("throughput", f"{sparks}  rows finished per {width}, peak {peak:,}"),
    ]


def _latency_lines(latency: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name in ("succeeded", "answered"):
        part = latency[name]
        if not part["count"]:
            continue
        values = "  ".join(
            f"{key} {format_ms(part[key])}" for key in ("p50", "p90", "p99", "max")
        )
        label = "latency" if not lines else ""
        lines.append(_line(label, f"{name:<10} {part['count']:>9,} rows  {values}"))
    return lines


def _doubt_lines(s: dict[str, Any]) -> list[str]:
    retries, doubt = s["retries"], s["in_doubt"]
    lines = []
    if retries["retries"]:
        lines.append(
            _line(
                "retries",
                f"{retries['retries']:,} retries over {retries['rows']:,} rows "
                f"(most attempts for one row: {retries['most_attempts']})",
            )
        )
    if doubt["resent"]:
        lines.append(
            _line(
                "in doubt",
                f"{doubt['resent']:,} rows sent again after an interruption "
                f"({doubt['resent_succeeded']:,} succeeded)",
            )
        )
    if doubt["unknown"]:
        listed = ", ".join(doubt["unknown_rows"][:UNKNOWN_SHOWN])
        more = ", …" if doubt["unknown"] > UNKNOWN_SHOWN else ""
        lines.append(
            _line(
                "unknown",
                f"{doubt['unknown']:,} rows may or may not have run; check them "
                f"by hand: {listed}{more}",
            )
        )
    return lines


def _error_lines(errors: dict[str, Any]) -> list[str]:
    if not errors["rows"]:
        return []
    kinds = errors["kinds"]
    lines = [
        _line(
            "errors",
            f"{errors['rows']:,} rows, {kinds:,} kind{'s' if kinds != 1 else ''}"
            + (f" (top {TOP_ERRORS})" if kinds > TOP_ERRORS else ""),
        )
    ]
    width = len(f"{errors['top'][0]['rows']:,}") if errors["top"] else 1
    for entry in errors["top"]:
        lines.append(_line("", f"{entry['rows']:>{width},}  {entry['kind']}"))
    if errors["other_rows"]:
        lines.append(
            _line("", f"{errors['other_rows']:,} more rows with rarer kinds of error")
        )
    return lines


def _note_lines(s: dict[str, Any]) -> list[str]:
    notes = []
    if s["read"] != s["output"]:
        notes.append(
            f"read the journal: {s['output']} is written when the run completes"
        )
    if s["superseded_records"]:
        notes.append(
            f"{s['superseded_records']:,} earlier records of rows recorded again "
            "were not counted (the last record of a row counts)"
        )
    if s["torn_tail"]:
        notes.append("the last record was cut short (a run was stopped) and ignored")
    if s["damaged_records"]:
        notes.append(f"{s['damaged_records']:,} damaged records were skipped")
    if not s["records"]:
        notes.append("no records yet")
    return [_line("note" if i == 0 else "", note) for i, note in enumerate(notes)]


# ------------------------------------------------------------------- command


@click.command()
@click.argument("output", metavar="OUTPUT")
@click.option(
    "--html",
    "html_path",
    metavar="FILE",
    help="Also write a self-contained HTML report (opens offline) to FILE.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def report(output: str, html_path: str | None, as_json: bool) -> None:
    """Sum up a run's OUTPUT file: statuses, errors, latency, throughput.

    Reads CSV, JSON Lines, Parquet or Excel output as a stream (a torn last
    record is ignored) and prints counts by status and error, latency
    percentiles, rows finished over time, retries and rows in doubt. Exit
    codes: 0 printed, 2 the file is missing, unreadable or not an output.
    """
    try:
        summary = analyse(output)
        if html_path:
            write_html(html_path, summary)
    except BatchrunError as error:
        click.echo(f"batchrun: error: {error}", err=True)
        sys.exit(error.exit_code)
    if as_json:
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        click.echo(render_text(summary))
    if html_path:
        click.echo(f"batchrun: wrote {html_path}", err=True)


def write_html(path: str, summary: dict[str, Any]) -> None:
    """Write the HTML report, whole, to ``path``."""
    from .report_html import render_html

    temporary = path + ".tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(render_html(summary))
        os.replace(temporary, path)
    except OSError as exc:
        raise UsageError(
            f"--html {path}: cannot write it ({exc.strerror}); name a file in a "
            "writable directory"
        ) from exc
