"""The report as data and as text: the ``--json`` summary and its text rendering.

``summarise`` turns a ``Tally`` into one JSON-ready dict, which ``--json``
prints as it is and which ``render_text`` here and ``render_html`` in
``html.py`` both lay out. The ``format_*`` helpers put numbers in words for
people and are shared with the HTML page.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .reading import EPOCH, FORMAT_NAMES, Reading, safe_text

if TYPE_CHECKING:
    from .stats import LatencyHistogram, Tally

TOP_ERRORS = 10
UNKNOWN_SHOWN = 10  # in the text

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
