"""batchrun report: reading every output format, counting exactly, rendering safely."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from openpyxl import Workbook

from batchrun.report import (
    KEPT_BUCKETS,
    LatencyHistogram,
    Throughput,
    analyse,
    error_kind,
    render_text,
    report,
)
from batchrun.report.html import render_html
from batchrun.sinks import RESULT_FIELDS, open_sink, spreadsheet_safe

REPO = Path(__file__).resolve().parent.parent
T0 = "2026-12-04T15:00:00.000Z"
HOSTILE = "HTTP 500: <script>alert(1)</script> & \"quoted\" 'x'"
TOKEN = "sk-live-0123456789abcdef"
INT_FIELDS = ("row", "http_status", "attempts", "latency_ms")


def rec(row: int, status: str = "succeeded", **changes: Any) -> dict[str, Any]:
    """One output record with plain defaults: answered 200 in 10 ms at T0."""
    values: dict[str, Any] = {
        "row": row,
        "status": status,
        "http_status": 200,
        "session_id": f"s-{row}" if status == "succeeded" else None,
        "error": None,
        "attempts": 1,
        "resent": False,
        "started_at": T0,
        "latency_ms": 10,
        "row_id": f"run-{row}",
    }
    values.update(changes)
    return values


def mixed_records() -> list[dict[str, Any]]:
    """Ten records with one of everything the report counts."""
    return [
        rec(1, latency_ms=10),
        rec(2, latency_ms=20, attempts=3),
        rec(3, latency_ms=30, resent=True),
        rec(4, latency_ms=40, started_at="2026-12-04T15:00:01.000Z"),
        rec(
            5, "failed", http_status=400, error="HTTP 400: Missing phone", latency_ms=5
        ),
        rec(
            6, "failed", http_status=400, error="HTTP 400: Missing phone", latency_ms=6
        ),
        rec(
            7,
            "failed",
            http_status=503,
            error="HTTP 503: busy (after 5 attempts)",
            attempts=5,
            latency_ms=250,
        ),
        rec(
            8,
            "invalid",
            http_status=None,
            error="line 9: 3 fields, expected 4",
            attempts=0,
            started_at=None,
            latency_ms=None,
        ),
        rec(
            9,
            "invalid",
            http_status=None,
            error="line 12: 5 fields, expected 4",
            attempts=0,
            started_at=None,
            latency_ms=None,
        ),
        rec(
            10,
            "unknown",
            http_status=None,
            error="read timeout after 300 s (the flow may have run)",
            resent=True,
            latency_ms=300_000,
        ),
    ]


# ------------------------------------------------------------------ writers


def write_csv(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    """CSV as the CSV sink writes it: text cells, true/false, '-escaped formulas."""
    fields = list(records[0]) if records else list(RESULT_FIELDS)
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(fields)
        for record in records:
            writer.writerow(
                [
                    "" if record[f] is None else spreadsheet_safe(record[f])
                    for f in fields
                ]
            )
    return path


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def write_parquet(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    fields = list(records[0])
    types = {"resent": pa.bool_(), **{name: pa.int64() for name in INT_FIELDS}}
    schema = pa.schema([(name, types.get(name, pa.string())) for name in fields])
    columns = {name: [record[name] for record in records] for name in fields}
    pq.write_table(pa.table(columns, schema=schema), path, row_group_size=3)
    return path


def write_xlsx(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("results")
    fields = list(records[0])
    sheet.append(fields)
    for record in records:
        sheet.append([spreadsheet_safe(record[name]) for name in fields])
    workbook.save(path)
    return path


WRITERS: dict[str, Callable[[Path, Sequence[dict[str, Any]]], Path]] = {
    "csv": write_csv,
    "jsonl": write_jsonl,
    "parquet": write_parquet,
    "xlsx": write_xlsx,
}


def write(tmp_path: Path, fmt: str, records: Sequence[dict[str, Any]]) -> str:
    return str(WRITERS[fmt](tmp_path / f"results.{fmt}", records))


def comparable(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary without the parts that name the file."""
    return {k: v for k, v in summary.items() if k not in ("output", "read", "format")}


# ------------------------------------------------------------------ counting


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_report_counts_mixed_records_exactly(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path, fmt, mixed_records())

    summary = analyse(path)

    assert summary["records"] == summary["rows"] == 10
    assert summary["statuses"] == {
        "succeeded": 4,
        "failed": 3,
        "invalid": 2,
        "unknown": 1,
    }
    assert summary["http_statuses"] == {"200": 4, "400": 2, "503": 1}
    assert summary["retries"] == {"retries": 6, "rows": 2, "most_attempts": 5}
    assert summary["in_doubt"] == {
        "resent": 2,
        "resent_succeeded": 1,
        "unknown": 1,
        "unknown_rows": ["10"],
    }
    assert summary["latency"]["succeeded"] == {
        "count": 4,
        "p50": 20,
        "p90": 40,
        "p99": 40,
        "max": 40,
    }
    assert summary["latency"]["answered"] == {
        "count": 7,
        "p50": 20,
        "p90": 250,
        "p99": 250,
        "max": 250,
    }
    assert summary["torn_tail"] is False
    assert summary["damaged_records"] == 0


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_report_groups_errors_by_kind(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path, fmt, mixed_records())

    errors = analyse(path)["errors"]

    assert errors["rows"] == 6
    assert errors["kinds"] == 4
    assert [(e["kind"], e["rows"]) for e in errors["top"]] == [
        ("HTTP 400: Missing phone", 2),
        ("line N: N fields, expected N", 2),
        ("HTTP 503: busy (after N attempts)", 1),
        ("read timeout after N s (the flow may have run)", 1),
    ]
    assert errors["top"][1]["example"] == "line 9: 3 fields, expected 4"
    assert errors["top"][1]["statuses"] == {"invalid": 2}


def test_report_every_format_gives_the_same_summary(tmp_path: Path) -> None:
    records = mixed_records()

    summaries = [
        comparable(analyse(write(tmp_path, fmt, records))) for fmt in sorted(WRITERS)
    ]

    assert all(summary == summaries[0] for summary in summaries[1:])


@pytest.mark.parametrize("extension", [".csv", ".jsonl", ".parquet", ".xlsx"])
def test_report_reads_what_the_sinks_write(tmp_path: Path, extension: str) -> None:
    fields = ("email", *RESULT_FIELDS)
    records = [{"email": f"=x{r['row']}@example.com", **r} for r in mixed_records()]
    sink = open_sink(str(tmp_path / f"out{extension}"), fields)
    sink.create()
    sink.append(sink.encode([[r[name] for name in fields] for r in records]))
    sink.finish()
    sink.close()

    summary = analyse(str(tmp_path / f"out{extension}"))

    expected = analyse(write(tmp_path, "jsonl", mixed_records()))
    assert comparable(summary) == comparable(expected)
    assert summary["read"] == str(tmp_path / f"out{extension}")


def test_report_percentiles_exact_under_256_ms(tmp_path: Path) -> None:
    records = [rec(i, latency_ms=9 + i) for i in range(1, 101)]  # 10 .. 109 ms

    latency = analyse(write(tmp_path, "jsonl", records))["latency"]["succeeded"]

    assert latency == {"count": 100, "p50": 59, "p90": 99, "p99": 108, "max": 109}


def test_report_percentiles_within_precision_above_256_ms() -> None:
    histogram = LatencyHistogram()
    values = [300 + 37 * i for i in range(10_000)]  # 300 ms .. 370 s
    for value in values:
        histogram.add(value)

    for percent in (50, 90, 99):
        exact = values[-(-percent * len(values) // 100) - 1]
        found = histogram.percentile(percent)
        assert found is not None
        assert abs(found - exact) / exact <= 0.004
    assert histogram.percentile(100) == max(values)


def test_report_time_span_and_rate(tmp_path: Path) -> None:
    records = [
        rec(1, started_at="2026-12-04T15:00:00.000Z", latency_ms=500),
        rec(2, started_at="2026-12-04T15:00:04.000Z", latency_ms=1000),
        rec(3, started_at="2026-12-04T15:00:09.500Z", latency_ms=500),
        rec(4, "invalid", http_status=None, started_at=None, latency_ms=None),
    ]

    time = analyse(write(tmp_path, "csv", records))["time"]

    assert time == {
        "rows": 3,
        "first_start": "2026-12-04T15:00:00.000Z",
        "last_finish": "2026-12-04T15:00:10.000Z",
        "seconds": 10.0,
        "rows_per_second": 0.3,
    }


def test_report_throughput_buckets_by_finish_time(tmp_path: Path) -> None:
    # Ten rows finishing at 0.5 s, 1.5 s, ... 9.5 s after 15:00:00.
    records = [
        rec(i + 1, started_at=f"2026-12-04T15:00:0{i}.000Z", latency_ms=500)
        for i in range(10)
    ]

    throughput = analyse(write(tmp_path, "jsonl", records))["throughput"]

    buckets = throughput["buckets"]
    assert throughput["bucket_seconds"] == 0.2
    assert len(buckets) == 46
    assert buckets[0] == {
        "start": "2026-12-04T15:00:00.400Z",
        "rows": 1,
        "succeeded": 1,
    }
    assert buckets[-1]["start"] == "2026-12-04T15:00:09.400Z"
    assert sum(bucket["rows"] for bucket in buckets) == 10


def test_throughput_widens_and_keeps_every_row() -> None:
    throughput = Throughput()
    day = 86_400_000
    for i in range(3000):
        throughput.add(1_700_000_000_000 + i * 30 * day // 3000, i % 3 != 0)

    width, shown = throughput.shown()

    assert len(throughput.cells) <= KEPT_BUCKETS
    assert width == 86_400_000  # 30 days not aligned to 12 h need 61 half-days
    assert len(shown) == 31
    assert sum(ok + other for _, ok, other in shown) == 3000
    assert sum(ok for _, ok, _ in shown) == 2000


# -------------------------------------------------------------- damaged files


def test_report_ignores_torn_last_csv_record(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "results.csv", mixed_records()[:4])
    with open(path, "a", encoding="utf-8") as file:
        file.write('5,failed,400,,"HTTP 400: cut')

    summary = analyse(str(path))

    assert summary["rows"] == 4
    assert summary["torn_tail"] is True
    assert summary["damaged_records"] == 0


def test_report_ignores_torn_last_jsonl_record(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "results.jsonl", mixed_records()[:4])
    with open(path, "a", encoding="utf-8") as file:
        file.write('{"row": 5, "status": "succeeded"')

    summary = analyse(str(path))

    assert summary["rows"] == 4
    assert summary["torn_tail"] is True


def test_report_counts_damaged_record_in_the_middle(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in mixed_records()[:3]]
    lines.insert(1, '{"row": 2, "status": "exploded"}')
    lines.insert(2, "not json at all")
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")

    summary = analyse(str(tmp_path / "results.jsonl"))

    assert summary["rows"] == 3
    assert summary["damaged_records"] == 2
    assert summary["torn_tail"] is False


def test_report_csv_formula_apostrophe_is_removed(tmp_path: Path) -> None:
    records = [rec(1, "failed", http_status=400, error="=HYPERLINK(evil)")]

    summary = analyse(write(tmp_path, "csv", records))

    assert summary["errors"]["top"][0]["example"] == "=HYPERLINK(evil)"


def test_report_header_only_csv_has_no_records(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "results.csv", [])

    summary = analyse(str(path))

    assert summary["records"] == 0
    assert summary["throughput"]["buckets"] == []
    assert "no records yet" in render_text(summary)


# ------------------------------------------------------- rows recorded twice


def test_report_counts_only_the_last_record_of_a_row(tmp_path: Path) -> None:
    records = mixed_records()
    records.append(rec(5, latency_ms=50, attempts=1))  # --retry-failed, succeeded
    records.append(rec(7, latency_ms=70))

    summary = analyse(write(tmp_path, "csv", records))

    assert summary["records"] == 12
    assert summary["rows"] == 10
    assert summary["superseded_records"] == 2
    assert summary["statuses"]["succeeded"] == 6
    assert summary["statuses"]["failed"] == 1
    assert summary["retries"]["retries"] == 2  # row 7's 4 retries no longer count


def test_report_keyed_output_counts_last_record_per_key(tmp_path: Path) -> None:
    # A keyed run on a re-sorted input records the same key under new row numbers.
    records = [
        {"key": "alice", **rec(1, "failed", http_status=503, error="HTTP 503: x")},
        {"key": "bob", **rec(2)},
        {"key": "alice", **rec(2)},
        {"key": "carol", **rec(1)},
    ]

    summary = analyse(write(tmp_path, "jsonl", records))

    assert summary["rows"] == 3
    assert summary["statuses"] == {
        "succeeded": 3,
        "failed": 0,
        "invalid": 0,
        "unknown": 0,
    }


# ----------------------------------------------------- parquet/excel journal


def test_report_reads_journal_of_an_unfinished_parquet_run(tmp_path: Path) -> None:
    output = tmp_path / "results.parquet"
    write_jsonl(tmp_path / "results.parquet.journal.jsonl", mixed_records()[:3])

    summary = analyse(str(output))

    assert summary["read"] == str(output) + ".journal.jsonl"
    assert summary["rows"] == 3
    assert "read the journal" in render_text(summary)


def test_report_prefers_a_finished_excel_file(tmp_path: Path) -> None:
    journal = write_jsonl(tmp_path / "results.xlsx.journal.jsonl", mixed_records())
    final = write_xlsx(tmp_path / "results.xlsx", mixed_records())
    os.utime(journal, ns=(1_000_000_000, 1_000_000_000))

    summary = analyse(str(final))

    assert summary["read"] == str(final)
    assert summary["format"] == "xlsx"


# --------------------------------------------------------------- error kinds


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("HTTP 400: Missing required variable(s): first_name", None),
        ("HTTP 503: busy (after 5 attempts)", "HTTP 503: busy (after N attempts)"),
        (
            "line 7: not valid JSON (Expecting value: line 1 column 5 (char 4))",
            "line N: not valid JSON (Expecting value: line N column N (char N))",
        ),
        (
            "HTTP 409: session 3f2a8c1e-1b2c-4d5e-8f90-0a1b2c3d4e5f exists",
            "HTTP 409: session ID exists",
        ),
        (
            "HTTP 401: bad Authorization: Bearer abc.def",
            "HTTP 401: bad Authorization: Bearer [redacted]",
        ),
        ("bad\x1b[31m text\r\n", "bad [Nm text"),
    ],
)
def test_error_kind_drops_row_specific_parts(error: str, kind: str | None) -> None:
    assert error_kind(error) == (kind or error)


# ----------------------------------------------------------------- rendering


def test_report_text_is_compact_and_aligned(tmp_path: Path) -> None:
    summary = analyse(write(tmp_path, "csv", mixed_records()))

    lines = render_text(summary).splitlines()

    assert lines[0] == f"batchrun report: {tmp_path / 'results.csv'} (CSV, 10 records)"
    assert lines[1] == (
        "rows        10: succeeded 4 (40.0%), failed 3 (30.0%), invalid 2 (20.0%), "
        "unknown 1 (10.0%)"
    )
    assert lines[2] == "http        200 ×4, 400 ×2, 503 ×1"
    assert lines[3] == (
        "time        2026-12-04T15:00:00.000Z to 15:05:00.000Z, 5 min, 0.027 rows/s"
    )
    assert "latency     succeeded          4 rows  p50 20 ms  p90 40 ms" in lines[5]
    assert "retries     6 retries over 2 rows (most attempts for one row: 5)" in lines
    assert "            2  HTTP 400: Missing phone" in lines


def test_report_html_is_self_contained_with_charts(tmp_path: Path) -> None:
    summary = analyse(write(tmp_path, "jsonl", mixed_records()))

    page = render_html(summary)

    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 4  # outcomes, throughput, latency, errors
    assert "<script" not in page
    for external in ("http://", "https://", "src=", "href=", "@import", "url(http"):
        assert external not in page
    assert "rows finished per" in page
    assert "HTTP 400: Missing phone" in page


def test_report_html_escapes_hostile_error_text(tmp_path: Path) -> None:
    records = [rec(1), rec(2, "failed", http_status=500, error=HOSTILE)]
    summary = analyse(write(tmp_path, "csv", records))

    page = render_html(summary)

    assert "<script>" not in page
    assert "alert(1)" in page  # the example keeps its numbers
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;quoted&quot;" in page
    assert "&amp;" in page


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_report_never_shows_a_bearer_token(tmp_path: Path, fmt: str) -> None:
    error = f"HTTP 401: the gateway said Authorization: Bearer {TOKEN} is wrong"
    records = [rec(1, "unknown", http_status=401, error=error)]
    path = write(tmp_path, fmt, records)
    html_path = tmp_path / "report.html"

    text = CliRunner().invoke(report, [path, "--html", str(html_path)])
    as_json = CliRunner().invoke(report, [path, "--json"])

    for rendered in (text.output, as_json.output, html_path.read_text()):
        assert TOKEN not in rendered
        assert "Bearer [redacted]" in rendered


# ----------------------------------------------------------------- command


def test_report_command_prints_text_and_writes_html(tmp_path: Path) -> None:
    path = write(tmp_path, "parquet", mixed_records())
    html_path = tmp_path / "report.html"

    result = CliRunner().invoke(report, [path, "--html", str(html_path)])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("batchrun report: ")
    assert f"batchrun: wrote {html_path}" in result.stderr
    assert html_path.read_text().count("<svg") == 4


def test_report_command_json_matches_analyse(tmp_path: Path) -> None:
    path = write(tmp_path, "xlsx", mixed_records())

    result = CliRunner().invoke(report, [path, "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == analyse(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "missing.csv",
            None,
            "{path}: no such file; name the output file of a run (its -o)",
        ),
        (
            "results.txt",
            "row,status\n",
            "{path}: unknown extension '.txt'; a batchrun output is .csv, .jsonl, "
            ".parquet or .xlsx",
        ),
        (
            "contacts.csv",
            "name,phone\nAda,+1555\n",
            "{path}: not a batchrun output (it has no 'row' and 'status' columns); "
            "name the file a run wrote with -o",
        ),
        (
            "notes.jsonl",
            "hello\nworld\n",
            "{path}: not a batchrun output (line 1 is not a record with 'row' and "
            "'status'); name the file a run wrote with -o",
        ),
    ],
)
def test_report_command_refuses_what_is_not_an_output(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)

    result = CliRunner().invoke(report, [str(path)])

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"batchrun: error: {message.format(path=path)}\n"


@pytest.mark.parametrize("extension", [".parquet", ".xlsx"])
def test_report_command_refuses_a_corrupt_binary_file(
    tmp_path: Path, extension: str
) -> None:
    path = tmp_path / f"results{extension}"
    path.write_bytes(b"this is not a real file\n" * 10)

    result = CliRunner().invoke(report, [str(path)])

    assert result.exit_code == 2
    assert result.stderr.startswith(f"batchrun: error: {path}: not a batchrun output")
    assert result.stderr.count("\n") == 1


def test_report_command_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / "out.csv").mkdir()

    result = CliRunner().invoke(report, [str(tmp_path / "out.csv")])

    assert result.exit_code == 2
    assert result.stderr == (
        f"batchrun: error: {tmp_path / 'out.csv'}: is a directory; name the output "
        "file of a run\n"
    )


def test_report_command_html_in_a_missing_directory(tmp_path: Path) -> None:
    path = write(tmp_path, "csv", mixed_records())
    html_path = tmp_path / "nowhere" / "report.html"

    result = CliRunner().invoke(report, [path, "--html", str(html_path)])

    assert result.exit_code == 2
    assert result.stderr == (
        f"batchrun: error: --html {html_path}: cannot write it (No such file or "
        "directory); name a file in a writable directory\n"
    )


def test_report_runs_as_a_program(tmp_path: Path) -> None:
    path = write(tmp_path, "csv", mixed_records())
    program = "from batchrun.report import report; report()"

    done = subprocess.run(
        [sys.executable, "-c", program, path, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    missing = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path / "nope.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == 10
    assert missing.returncode == 2
    assert missing.stdout == ""
    assert missing.stderr.splitlines() == [
        f"batchrun: error: {tmp_path / 'nope.jsonl'}: no such file; name the output "
        "file of a run (its -o)"
    ]
