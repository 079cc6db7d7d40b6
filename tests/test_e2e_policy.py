"""End to end: the retry and pacing policy, seen from the service's request log.

Each test runs the real `batchrun run` against `batchrun serve` with injected
faults (429 with Retry-After, 500s, dropped connections, slow answers, a
server-side rate limit) and checks, from the service's own log, what reached
it and when, and from the output what each row's record says.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from conftest import Service

TOKEN = "tok-policy-81c4e0a9"
RUN_TIMEOUT = 90


def write_input(path: Path, rows: int) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as file:
        file.write("first_name,phone\n")
        for number in range(1, rows + 1):
            file.write(f"Name{number},+1555{number:07d}\n")
    return path


def run_batch(
    service: Service, input_path: Path, output: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHRUN_")}
    env["BATCHRUN_TOKEN"] = TOKEN
    command = [
        sys.executable,
        "-m",
        "batchrun",
        "run",
        str(input_path),
        "-o",
        str(output),
        "--base-url",
        service.url,
        "--org",
        "o",
        "--flow",
        "f",
        *extra,
    ]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )


def records(output: Path) -> dict[int, dict[str, str]]:
    with open(output, encoding="utf-8", newline="") as file:
        return {int(r["row"]): r for r in csv.DictReader(file)}


def requests_by_row(log: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for request in log:
        rows[int(request["idempotency_key"].rsplit("-", 1)[1])].append(request)
    return rows


def test_retry_after_is_honoured_per_row_and_across_the_pool(
    serve: Any, tmp_path: Path
) -> None:
    service = serve("--throttle-rate", "0.2", "--retry-after", "1", "--seed", "7")
    output = tmp_path / "out.csv"
    result = run_batch(
        service, write_input(tmp_path / "in.csv", 40), output, "--concurrency", "4"
    )
    service.stop()
    log = sorted(service.records(), key=lambda r: r["time"])

    assert result.returncode == 0, result.stderr
    throttles = [r for r in log if r["status"] == 429]
    assert throttles, "the service should have answered some 429s"
    # The retry of a throttled row never comes before its Retry-After.
    for row, attempts in requests_by_row(log).items():
        for before, after in zip(attempts, attempts[1:], strict=False):
            if before["status"] == 429:
                assert after["time"] - before["time"] >= 1.0, row
    # The pause holds the whole pool: after a 429, the only requests that
    # arrive within its Retry-After are those already sent when it was
    # answered (the other in-flight requests, within a quarter second even
    # on a busy machine).
    for throttle in throttles:
        inside = [
            r
            for r in log
            if throttle["time"] + 0.25 < r["time"] < throttle["time"] + 1.0
        ]
        assert inside == [], (throttle, inside[:3])
    recorded = records(output)
    counts = Counter(int(r["idempotency_key"].rsplit("-", 1)[1]) for r in log)
    assert all(int(recorded[row]["attempts"]) == n for row, n in counts.items())
    assert all(r["status"] == "succeeded" for r in recorded.values())


def test_retry_after_longer_than_max_retry_wait_fails_the_row(
    serve: Any, tmp_path: Path
) -> None:
    service = serve("--throttle-rate", "1", "--retry-after", "600")
    output = tmp_path / "out.csv"
    result = run_batch(
        service,
        write_input(tmp_path / "in.csv", 3),
        output,
        "--max-retry-wait",
        "5",
    )
    service.stop()

    assert result.returncode == 1, result.stderr
    for record in records(output).values():
        assert record["status"] == "failed"
        assert record["http_status"] == "429"
        assert "asked to wait 600 s" in record["error"]
        assert "--max-retry-wait 5" in record["error"]
    assert len(service.records()) == 3  # nobody waited ten minutes


def test_dropped_connections_are_retried_and_counted(
    serve: Any, tmp_path: Path
) -> None:
    service = serve("--drop-rate", "0.25", "--seed", "3")
    output = tmp_path / "out.csv"
    result = run_batch(
        service, write_input(tmp_path / "in.csv", 60), output, "--max-attempts", "8"
    )
    service.stop()
    log = service.records()
    drops = sum(1 for r in log if r["status"] == 0)

    assert result.returncode == 0, result.stderr
    assert drops > 0
    assert f"{drops} answers lost after the request was sent" in result.stderr
    by_row = requests_by_row(log)
    for row, record in records(output).items():
        assert record["status"] == "succeeded"
        assert int(record["attempts"]) == len(by_row[row])
        keys = {request["idempotency_key"] for request in by_row[row]}
        assert len(keys) == 1  # the same Idempotency-Key on every attempt


def test_no_resend_records_lost_answers_as_unknown(serve: Any, tmp_path: Path) -> None:
    service = serve("--drop-rate", "0.3", "--seed", "5")
    output = tmp_path / "out.csv"
    result = run_batch(
        service, write_input(tmp_path / "in.csv", 40), output, "--no-resend"
    )
    service.stop()
    log = service.records()
    dropped_rows = {
        row for row, reqs in requests_by_row(log).items() if reqs[0]["status"] == 0
    }

    assert result.returncode == 1
    assert dropped_rows
    for row, record in records(output).items():
        if row in dropped_rows:
            assert record["status"] == "unknown"
            assert "may have run" in record["error"]
        else:
            assert record["status"] == "succeeded"
    assert len(log) == 40  # nothing sent twice


def test_read_timeout_is_reported_with_its_length(serve: Any, tmp_path: Path) -> None:
    service = serve("--slow-rate", "1", "--slow-ms", "3000")
    output = tmp_path / "out.csv"
    result = run_batch(
        service,
        write_input(tmp_path / "in.csv", 2),
        output,
        "--timeout",
        "0.4",
        "--max-attempts",
        "2",
    )
    service.stop()

    assert result.returncode == 1
    for record in records(output).values():
        assert record["status"] == "unknown"
        assert "read timeout after 0.4 s" in record["error"]
        assert record["attempts"] == "2"
    assert "0.4 s read" in result.stderr  # the timeouts are shown at start


def test_a_run_failing_every_row_stops_early_and_resumes(
    serve: Any, tmp_path: Path
) -> None:
    service = serve("--fail-rate", "1")
    output = tmp_path / "out.csv"
    input_path = write_input(tmp_path / "in.csv", 500)
    result = run_batch(
        service,
        input_path,
        output,
        "--max-attempts",
        "1",
        "--max-consecutive-failures",
        "20",
        "--concurrency",
        "4",
    )

    assert result.returncode == 3
    assert "20 rows failed in a row" in result.stderr
    assert "HTTP 500" in result.stderr
    assert "to resume, run:" in result.stderr
    done = records(output)
    assert 20 <= len(done) < 100
    service.stop()


def test_adapts_to_a_service_rate_limit(serve: Any, tmp_path: Path) -> None:
    service = serve("--max-rate", "100")
    output = tmp_path / "out.csv"
    result = run_batch(
        service,
        write_input(tmp_path / "in.csv", 600),
        output,
        "--concurrency",
        "32",
        "--max-attempts",
        "10",
    )
    service.stop()
    log = service.records()
    throttled = sum(1 for r in log if r["status"] == 429)

    assert result.returncode == 0, result.stderr
    assert all(r["status"] == "succeeded" for r in records(output).values())
    # It slowed down instead of hammering: most requests went through.
    assert throttled < 200, throttled
    assert len(log) == 600 + throttled


def test_requests_in_flight_never_exceed_concurrency(
    serve: Any, tmp_path: Path
) -> None:
    service = serve("--latency", "100")
    output = tmp_path / "out.csv"
    result = run_batch(
        service, write_input(tmp_path / "in.csv", 60), output, "--concurrency", "5"
    )
    service.stop()
    events = []
    for request in service.records():
        events.append((request["time"], 1))
        events.append((request["time"] + request["latency_ms"] / 1000, -1))
    in_flight = peak = 0
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):
        in_flight += change
        peak = max(peak, in_flight)

    assert result.returncode == 0, result.stderr
    assert peak <= 5
    assert json.loads(json.dumps(peak)) >= 3  # and it did run them in parallel
