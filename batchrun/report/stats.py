"""Counting a run's records: statuses, errors, latency, throughput, repeats.

``analyse`` reads an output once (twice when some row has more than one
record), adds each record to a ``Tally`` and returns the summary. Every
structure here has a bounded size, so memory stays flat however many records
the output holds.

Precision: latency percentiles come from log-spaced buckets with exact
counts; values under 256 ms are exact, larger ones within 0.4% (the maximum
is exact). Rows per time bucket are exact. When a row has more than one
record (an interrupted ``--retry-failed`` leaves them until it settles), only
its last record counts; finding those rows reads the file a second time.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from typing import Any

from .reading import STATUSES, Reading, Record, safe_text
from .text import summarise

PERCENTILES = (50, 90, 99)
MAX_ERROR_KINDS = 1000  # rows with kinds past this many are counted as "other"
UNKNOWN_LISTED = 20  # in --json and --html

_ID = re.compile(
    r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
    r"|\b[0-9a-f]{16,}\b"
)
# A number that is not an HTTP status: "line 7", "after 5 attempts", "2.5 s".
_NUMBER = re.compile(r"(?<!HTTP )\b\d+(?:\.\d+)*")


def error_kind(error: str) -> str:
    """Group an error with its like by dropping row-specific numbers and ids."""
    return _NUMBER.sub("N", _ID.sub("ID", safe_text(error)))


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
