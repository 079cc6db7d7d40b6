"""Resuming runs end to end: kills, signals, torn records and changed runs.

Every test runs the real CLI (``python -m batchrun run``) in a subprocess
against the real local service on 127.0.0.1, then judges the run by what is
on disk (the output and its checkpoint) and by the service's request log,
where the Idempotency-Key "<run_id>-<row>" ties each request to its row.

The invariant behind the kill tests: a row's request that reached the service
in an earlier run (more requests than the final record's attempts) must be
flagged ``resent`` in the final record, because batchrun could not know
whether the flow ran. The converse does not hold: a run killed between noting
a dispatch in the checkpoint and sending it leaves a row in doubt that the
service never saw, so resent rows may have a single request.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Service

TOKEN = "test-token-resume"
ORG = "demo-org"
FLOW = "welcome-message"
FIELDS = [
    "row",
    "status",
    "http_status",
    "session_id",
    "error",
    "attempts",
    "resent",
    "started_at",
    "latency_ms",
    "row_id",
]
KEY_FIELDS = [FIELDS[0], "key", *FIELDS[1:]]
SKIP_RELEASES_EARLY = (
    "with --in-doubt skip a row in doubt is marked answered (a u line) in the "
    "checkpoint before its unknown record reaches the output; if that record "
    "is lost, the next run sends the row as new"
)
UNKNOWN_ERROR = (
    "sent before an interruption and never answered; the flow may have run: "
    "check it by hand"
)

EXIT_OK, EXIT_ROWS_FAILED, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130

RUN_TIMEOUT = 30.0  # one batchrun process
WAIT_TIMEOUT = 10.0  # one condition polled while a run goes
POLL_INTERVAL = 0.01
QUICK_EXIT = 1.0  # a second Ctrl-C must end the run well before the latency

KILL_ROWS = 3000
KILL_DELAY = (0.05, 0.6)  # seconds after the run opened its checkpoint
MAX_KILLS = 12
MAX_RUNS = 30
KILL_LOOP_DEADLINE = 120.0

IN_DOUBT = re.compile(
    r"([\d,]+) in doubt after an interruption \(([\d,]+) sent again\)"
)


# Running the CLI


@dataclass
class Result:
    """How a finished batchrun process ended."""

    code: int
    stderr: str


def environment() -> dict[str, str]:
    """This process's environment with no BATCHRUN_* setting but the token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHRUN_")}
    env["BATCHRUN_TOKEN"] = TOKEN
    return env


def command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "batchrun", *args]


def batchrun(args: list[str], **options: Any) -> Result:
    """Run batchrun to its end (killed after RUN_TIMEOUT seconds)."""
    done = subprocess.run(
        command(args),
        env=environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        **options,
    )
    return Result(done.returncode, done.stderr)


class Launched:
    """A batchrun process still running, its stderr going to a file."""

    def __init__(self, process: subprocess.Popen[bytes], stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def finish(self) -> Result:
        """Wait for the process to end on its own."""
        code = self.process.wait(timeout=RUN_TIMEOUT)
        return Result(code, self.stderr())


@contextmanager
def launched(tmp_path: Path, args: list[str]) -> Iterator[Launched]:
    """Start batchrun; kill it on leaving if it is still running."""
    stderr_path = fresh_path(tmp_path, "stderr", ".txt")
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command(args),
            env=environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield Launched(process, stderr_path)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=RUN_TIMEOUT)


def fresh_path(directory: Path, stem: str, suffix: str) -> Path:
    number = 0
    while (directory / f"{stem}-{number}{suffix}").exists():
        number += 1
    return directory / f"{stem}-{number}{suffix}"


def wait_until(condition: Callable[[], bool], what: str, run: Launched) -> None:
    """Poll ``condition`` while ``run`` goes; fail if it ends or time runs out."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not condition():
        if run.process.poll() is not None:
            pytest.fail(
                f"batchrun ended ({run.process.returncode}) before {what}: "
                f"{run.stderr()}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {WAIT_TIMEOUT:g} s")
        time.sleep(POLL_INTERVAL)


def run_args(input_path: Path, output: Path, url: str, *extra: str) -> list[str]:
    return [
        "run",
        str(input_path),
        "-o",
        str(output),
        "--base-url",
        url,
        "--org",
        ORG,
        "--flow",
        FLOW,
        *extra,
    ]


def resume_command(stderr: str) -> list[str]:
    """The words of the "to resume, run:" line."""
    found = re.search(r"^  to resume, run: (.+)$", stderr, re.MULTILINE)
    assert found, stderr
    return shlex.split(found[1])


def in_doubt_counts(stderr: str) -> tuple[int, int]:
    """A summary's rows in doubt and rows sent again; (0, 0) when not shown."""
    found = IN_DOUBT.search(stderr)
    if found is None:
        return 0, 0
    return int(found[1].replace(",", "")), int(found[2].replace(",", ""))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Files


def write_input(
    path: Path,
    count: int,
    *,
    blank: dict[int, str] | None = None,
    keys: list[str] | None = None,
) -> Path:
    """A CSV of ``count`` contacts; ``blank`` empties one column of some rows."""
    columns = ["first_name", "phone", "plan"]
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["id", *columns] if keys else columns)
        for number in range(1, count + 1):
            row = {"first_name": f"name{number}", "phone": f"+1555{number:07d}"}
            row["plan"] = "gold"
            if blank and number in blank:
                row[blank[number]] = ""
            values = [row[name] for name in columns]
            writer.writerow([keys[number - 1], *values] if keys else values)
    return path


def read_output(path: Path, fields: list[str] = FIELDS) -> list[dict[str, str]]:
    """Every record of an output that must parse whole, in file order."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), f"{path} ends in a torn record"
    rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    assert rows[0] == fields
    assert [len(row) for row in rows if len(row) != len(fields)] == []
    return [dict(zip(fields, row, strict=True)) for row in rows[1:]]


def complete_records(path: Path, fields: list[str] = FIELDS) -> list[dict[str, str]]:
    """The complete records of an output a run may be writing or was killed in."""
    if not path.exists():
        return []
    data = path.read_bytes()
    text = data[: data.rfind(b"\n") + 1].decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    return [dict(zip(fields, row, strict=True)) for row in rows[1:]]


def file_size_limit(limit: int) -> Callable[[], None]:
    """A preexec_fn: writes past ``limit`` bytes fail with EFBIG, as on a full
    disk (Python ignores the SIGXFSZ that comes with them)."""

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_file_size


def file_identity(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_mtime_ns


def dispatched(checkpoint: Path) -> bool:
    """True once the checkpoint notes a row about to be sent (a "d" line)."""
    return checkpoint.exists() and b"\nd " in checkpoint.read_bytes()


def failed_row_recorded(output: Path, row: int) -> bool:
    return any(
        r["row"] == str(row) and r["status"] == "failed"
        for r in complete_records(output)
    )


# What the service saw


def requests_by_key(service: Service) -> dict[str, list[dict[str, Any]]]:
    """Stop the service (flushing its log) and group its requests by key."""
    service.stop()
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for request in service.records():
        grouped[request["idempotency_key"]].append(request)
    return dict(grouped)


def run_id_of(records: list[dict[str, str]]) -> str:
    run_ids = {r["row_id"].rsplit("-", 1)[0] for r in records if r["row_id"]}
    assert len(run_ids) == 1, run_ids
    return run_ids.pop()


def assert_one_record_per_row(records: list[dict[str, str]], count: int) -> None:
    seen = Counter(int(record["row"]) for record in records)
    duplicates = sorted(row for row, times in seen.items() if times > 1)
    missing = sorted(set(range(1, count + 1)) - set(seen))
    assert (duplicates, missing) == ([], [])


def unflagged_resends(
    records: list[dict[str, str]], requests: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """Rows the service saw in an earlier run whose record says resent=false."""
    return [
        record["row"]
        for record in records
        if len(requests.get(record["row_id"], [])) > int(record["attempts"])
        and record["resent"] != "true"
    ]


def unmatched_sessions(
    records: list[dict[str, str]], requests: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """Succeeded rows whose session id the service never gave for their key."""
    return [
        record["row"]
        for record in records
        if record["status"] == "succeeded"
        and record["session_id"]
        not in {r["session_id"] for r in requests.get(record["row_id"], [])}
    ]


# Killing runs


@dataclass
class KillLoop:
    """What repeated SIGKILLs and a last run to the end left behind."""

    kills: int
    final: Result
    recorded_before: int  # complete records when the final run started


def kill_repeatedly(
    tmp_path: Path, args: list[str], output: Path, seed: int
) -> KillLoop:
    """SIGKILL runs at seeded random moments, then let one run to its end."""
    rng = random.Random(seed)
    checkpoint = Path(f"{output}.checkpoint")
    deadline = time.monotonic() + KILL_LOOP_DEADLINE
    kills = 0
    for _ in range(MAX_RUNS):
        assert time.monotonic() < deadline, f"no complete run after {kills} kills"
        recorded_before = len(complete_records(output))
        if kills == MAX_KILLS:
            return KillLoop(kills, batchrun(args), recorded_before)
        ended = run_or_kill(tmp_path, args, checkpoint, rng.uniform(*KILL_DELAY))
        if ended is not None:
            return KillLoop(kills, ended, recorded_before)
        kills += 1
        rows = Counter(record["row"] for record in complete_records(output))
        assert [row for row, times in rows.items() if times > 1] == []
    pytest.fail(f"no complete run in {MAX_RUNS} runs")


def run_or_kill(
    tmp_path: Path, args: list[str], checkpoint: Path, delay: float
) -> Result | None:
    """SIGKILL a run ``delay`` s after it (re)opens its checkpoint; None if killed.

    Preparing a run writes its checkpoint anew, so a changed file identity
    means the run is about to send.
    """
    before = file_identity(checkpoint)
    with launched(tmp_path, args) as run:
        wait_until(
            lambda: file_identity(checkpoint) != before, "opened checkpoint", run
        )
        try:
            code = run.process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait(timeout=RUN_TIMEOUT)
            return None
        return Result(code, run.stderr())


def test_sigkill_at_random_moments_resumes_with_in_doubt_rows_resent(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    service = serve("--latency", "30-120")
    input_path = write_input(tmp_path / "contacts.csv", KILL_ROWS)
    output = tmp_path / "results.csv"
    args = run_args(input_path, output, service.url, "--concurrency", "200")

    loop = kill_repeatedly(tmp_path, args, output, seed=1729)

    assert loop.kills >= 1
    assert loop.final.code == EXIT_OK, loop.final.stderr
    records = read_output(output)
    assert_one_record_per_row(records, KILL_ROWS)
    assert {r["status"] for r in records} == {"succeeded"}
    run_id = run_id_of(records)
    assert [r["row"] for r in records if r["row_id"] != f"{run_id}-{r['row']}"] == []
    requests = requests_by_key(service)
    assert set(requests) == {f"{run_id}-{n}" for n in range(1, KILL_ROWS + 1)}
    assert {r["status"] for sent in requests.values() for r in sent} == {200}
    assert unmatched_sessions(records, requests) == []
    assert unflagged_resends(records, requests) == []
    in_doubt, resent = in_doubt_counts(loop.final.stderr)
    flagged_now = [r for r in records[loop.recorded_before :] if r["resent"] == "true"]
    assert in_doubt == resent == len(flagged_now)


# Fails only when a kill lands in the window between the u line and the flush
# of the unknown record (about one run in six); the deterministic test below
# shows the same fault every time.
def test_sigkill_at_random_moments_with_in_doubt_skip_sends_no_row_twice(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    service = serve("--latency", "30-120")
    input_path = write_input(tmp_path / "contacts.csv", KILL_ROWS)
    output = tmp_path / "results.csv"
    args = run_args(
        input_path, output, service.url, "--concurrency", "200", "--in-doubt", "skip"
    )

    loop = kill_repeatedly(tmp_path, args, output, seed=31337)

    records = read_output(output)
    assert_one_record_per_row(records, KILL_ROWS)
    requests = requests_by_key(service)
    assert sorted(key for key, sent in requests.items() if len(sent) > 1) == []
    unknown = [r for r in records if r["status"] == "unknown"]
    assert unknown, "the kills left no row in doubt"
    assert loop.final.code == EXIT_ROWS_FAILED, loop.final.stderr
    assert {r["status"] for r in records} == {"succeeded", "unknown"}
    assert {(r["error"], r["session_id"], r["resent"]) for r in unknown} == {
        (UNKNOWN_ERROR, "", "false")
    }
    assert unmatched_sessions(records, requests) == []
    never_sent = [r for r in records if r["row_id"] not in requests]
    assert {r["status"] for r in never_sent} <= {"unknown"}
    in_doubt, resent = in_doubt_counts(loop.final.stderr)
    recorded_now = records[loop.recorded_before :]
    assert (in_doubt, resent) == (
        sum(r["status"] == "unknown" for r in recorded_now),
        0,
    )


def test_in_doubt_skip_sends_no_row_again_after_a_failed_write(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    rows = 60
    service = serve("--latency", "300")
    input_path = write_input(tmp_path / "contacts.csv", rows)
    output = tmp_path / "results.csv"
    args = run_args(
        input_path, output, service.url, "--concurrency", "10", "--in-doubt", "skip"
    )
    with launched(tmp_path, args) as run:
        wait_until(lambda: len(complete_records(output)) >= 30, "records", run)
        run.process.kill()
    # The output may not grow, the smaller checkpoint still may: the unknown
    # records of the rows in doubt never reach the disk.
    full = batchrun(args, preexec_fn=file_size_limit(output.stat().st_size))
    assert full.code == EXIT_ABORTED, full.stderr

    final = batchrun(args)

    requests = requests_by_key(service)
    assert sorted(key for key, sent in requests.items() if len(sent) > 1) == []
    records = read_output(output)
    assert_one_record_per_row(records, rows)
    assert final.code == EXIT_ROWS_FAILED, final.stderr


# Ctrl-C and SIGTERM


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_requests_in_flight_and_run_resumes(
    tmp_path: Path, serve: Callable[..., Service], signum: int
) -> None:
    rows = 200
    service = serve("--latency", "200")
    input_path = write_input(tmp_path / "contacts.csv", rows)
    output = tmp_path / "results.csv"
    args = run_args(input_path, output, service.url, "--concurrency", "20")

    with launched(tmp_path, args) as run:
        wait_until(lambda: len(complete_records(output)) >= 20, "records", run)
        run.process.send_signal(signum)
        stopped = run.finish()

    assert stopped.code == EXIT_INTERRUPTED
    name = signal.Signals(signum).name
    assert (
        f"batchrun: {name}: finishing the requests in flight (up to 10 s; press "
        "Ctrl-C again to stop now)\n"
    ) in stopped.stderr
    assert resume_command(stopped.stderr) == ["batchrun", *args]
    partial = read_output(output)
    assert 20 <= len(partial) < rows
    assert {r["status"] for r in partial} == {"succeeded"}
    assert Path(f"{output}.checkpoint").exists()

    resumed = batchrun(args)

    assert resumed.code == EXIT_OK, resumed.stderr
    done = len(partial)
    assert f"batchrun: resuming: {done:,} rows already have a record\n" in (
        resumed.stderr
    )
    assert in_doubt_counts(resumed.stderr) == (0, 0)
    records = read_output(output)
    assert records[:done] == partial
    assert_one_record_per_row(records, rows)
    requests = requests_by_key(service)
    assert sorted(len(sent) for sent in requests.values()) == [1] * rows
    assert unmatched_sessions(records, requests) == []


def test_second_sigint_stops_at_once_and_run_resumes(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    rows = 20
    service = serve("--latency", "2000")
    input_path = write_input(tmp_path / "contacts.csv", rows)
    output = tmp_path / "results.csv"
    checkpoint = Path(f"{output}.checkpoint")
    args = run_args(input_path, output, service.url, "--concurrency", "20")

    with launched(tmp_path, args) as run:
        wait_until(lambda: dispatched(checkpoint), "request in flight", run)
        run.process.send_signal(signal.SIGINT)
        wait_until(lambda: "finishing the requests" in run.stderr(), "notice", run)
        second = time.monotonic()
        run.process.send_signal(signal.SIGINT)
        stopped = run.finish()
        took = time.monotonic() - second

    assert stopped.code == EXIT_INTERRUPTED
    assert took < QUICK_EXIT
    assert "batchrun: SIGINT again: stopping now\n" in stopped.stderr
    assert resume_command(stopped.stderr) == ["batchrun", *args]
    partial = read_output(output)

    resumed = batchrun(args)

    assert resumed.code == EXIT_OK, resumed.stderr
    in_doubt, resent = in_doubt_counts(resumed.stderr)
    assert in_doubt == resent >= 1
    records = read_output(output)
    assert records[: len(partial)] == partial
    assert_one_record_per_row(records, rows)
    assert sum(r["resent"] == "true" for r in records) == resent
    requests = requests_by_key(service)
    assert unflagged_resends(records, requests) == []
    assert unmatched_sessions(records, requests) == []
    extra = sum(len(sent) - 1 for sent in requests.values())
    assert extra <= resent


# Torn records


def test_torn_last_record_is_cut_and_its_row_sent_again(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    rows = 100
    service = serve("--latency", "50")
    input_path = write_input(tmp_path / "contacts.csv", rows)
    output = tmp_path / "results.csv"
    args = run_args(input_path, output, service.url, "--concurrency", "5")
    with launched(tmp_path, args) as run:
        wait_until(lambda: len(complete_records(output)) >= 10, "records", run)
        run.process.kill()
    partial = read_output(output)
    run_id = run_id_of(partial)
    torn_row = min(set(range(1, rows + 1)) - {int(r["row"]) for r in partial})
    whole = (
        f"{torn_row},succeeded,200,0b6f1f6e-3f0a-4a57-9d8e-5a1f2b3c4d5e,,1,false,"
        f"2024-06-11T10:00:00.000Z,48,{run_id}-{torn_row}\n"
    )
    size = output.stat().st_size
    with output.open("a", encoding="utf-8") as file:
        file.write(whole[: len(whole) // 2])

    resumed = batchrun(args)

    assert resumed.code == EXIT_OK, resumed.stderr
    assert (
        f"batchrun: cut a torn last record from {output} (bytes {size} on); its "
        "row will be sent again\n"
    ) in resumed.stderr
    records = read_output(output)
    assert records[: len(partial)] == partial
    assert_one_record_per_row(records, rows)
    (again,) = [r for r in records if r["row"] == str(torn_row)]
    assert again["status"] == "succeeded"
    requests = requests_by_key(service)
    assert unmatched_sessions(records, requests) == []
    assert unflagged_resends(records, requests) == []


# A run that changed


@pytest.mark.parametrize(
    ("change", "label"),
    [("input", "the input file's content"), ("flow", "--flow")],
)
def test_resume_is_refused_when_the_run_changed(
    tmp_path: Path, serve: Callable[..., Service], change: str, label: str
) -> None:
    service = serve()
    input_path = write_input(tmp_path / "contacts.csv", 20)
    output = tmp_path / "results.csv"
    args = run_args(input_path, output, service.url)
    assert batchrun([*args, "--limit", "5"]).code == EXIT_OK
    before = output.read_bytes()
    if change == "input":
        text = input_path.read_text(encoding="utf-8")
        input_path.write_text(text.replace("name3,", "nameX,"), encoding="utf-8")
    else:
        args[args.index("--flow") + 1] = "plan-upgrade-offer"

    refused = batchrun(args)

    assert refused.code == EXIT_USAGE
    assert refused.stderr == (
        f"batchrun: error: {output} belongs to a different run: {label} changed "
        "since it was started; run with the same input and options to resume, or "
        "pass --restart to start over (the old output is kept)\n"
    )
    assert output.read_bytes() == before
    requests = requests_by_key(service)
    assert sum(len(sent) for sent in requests.values()) == 5


# --restart


def test_restart_keeps_the_old_output_and_runs_everything_again(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    service = serve()
    input_path = write_input(tmp_path / "contacts.csv", 20)
    output = tmp_path / "results.csv"
    args = run_args(input_path, output, service.url)
    assert batchrun([*args, "--limit", "5"]).code == EXIT_OK
    old_output = output.read_bytes()
    old_checkpoint = Path(f"{output}.checkpoint").read_bytes()
    old_run_id = run_id_of(read_output(output))

    restarted = batchrun([*args, "--restart"])

    assert restarted.code == EXIT_OK, restarted.stderr
    kept = dict(
        re.findall(
            r"^batchrun: kept the previous (\S+) as (\S+)$", restarted.stderr, re.M
        )
    )
    assert Path(kept[str(output)]).read_bytes() == old_output
    assert Path(kept[f"{output}.checkpoint"]).read_bytes() == old_checkpoint
    records = read_output(output)
    assert_one_record_per_row(records, 20)
    new_run_id = run_id_of(records)
    assert new_run_id != old_run_id
    requests = requests_by_key(service)
    assert sorted(requests) == sorted(
        [f"{old_run_id}-{n}" for n in range(1, 6)]
        + [f"{new_run_id}-{n}" for n in range(1, 21)]
    )


def test_restart_never_overwrites_an_earlier_kept_output(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    service = serve()
    input_path = write_input(tmp_path / "contacts.csv", 5)
    output = tmp_path / "results.csv"
    args = run_args(input_path, output, service.url)
    assert batchrun(args).code == EXIT_OK
    # What a --restart a moment earlier would have kept: one file for every
    # second this restart may run in.
    now = datetime.now()
    earlier = [
        tmp_path / f"results.before-{now + timedelta(seconds=s):%Y%m%d-%H%M%S}.csv"
        for s in range(-2, int(RUN_TIMEOUT))
    ]
    for path in earlier:
        path.write_text("kept by an earlier --restart\n", encoding="utf-8")

    restarted = batchrun([*args, "--restart"])

    assert restarted.code == EXIT_OK, restarted.stderr
    assert {path.read_text(encoding="utf-8") for path in earlier} == {
        "kept by an earlier --restart\n"
    }


# --retry-failed


def write_flows(path: Path) -> Path:
    """A flows file whose flow requires "plan"."""
    flows = {"flows": [{"org": ORG, "flow": FLOW, "required": ["plan"]}]}
    path.write_text(json.dumps(flows), encoding="utf-8")
    return path


@pytest.mark.parametrize("with_invalid", [False, True])
def test_retry_failed_sends_only_the_failed_rows_again(
    tmp_path: Path, serve: Callable[..., Service], with_invalid: bool
) -> None:
    rows, failed = 30, [4, 9, 17]
    invalid = [6, 22] if with_invalid else []
    blank = {n: "plan" for n in failed} | {n: "first_name" for n in invalid}
    input_path = write_input(tmp_path / "contacts.csv", rows, blank=blank)
    output = tmp_path / "results.csv"
    port = free_port()
    flows = write_flows(tmp_path / "flows.json")
    strict = serve("--port", str(port), "--flows", str(flows))
    args = run_args(input_path, output, strict.url, "--require", "first_name")
    first = batchrun(args)
    assert first.code == EXIT_ROWS_FAILED, first.stderr
    before = read_output(output)
    status = {int(r["row"]): r["status"] for r in before}
    assert [n for n in status if status[n] == "failed"] == failed
    assert [n for n in status if status[n] == "invalid"] == invalid
    strict.stop()
    lenient = serve("--port", str(port))
    assert lenient.url == strict.url

    retried = batchrun([*args, "--retry-failed"])

    records = read_output(output)
    assert_one_record_per_row(records, rows)
    kept = [r for r in before if int(r["row"]) not in failed]
    assert records[: len(kept)] == kept
    added = records[len(kept) :]
    assert [int(r["row"]) for r in added] == failed
    assert {(r["status"], r["resent"]) for r in added} == {("succeeded", "false")}
    run_id = run_id_of(before)
    requests = requests_by_key(lenient)
    assert sorted(requests) == sorted(f"{run_id}-{n}" for n in failed)
    assert unmatched_sessions(added, requests) == []
    good = rows - len(invalid)
    if with_invalid:
        assert retried.code == EXIT_ROWS_FAILED
        totals = f"{len(invalid)} invalid, {good} succeeded"
    else:
        assert retried.code == EXIT_OK, retried.stderr
        totals = f"{good} succeeded"
    assert f"  whole output so far: {totals}\n" in retried.stderr


def test_retry_failed_after_a_kill_counts_in_doubt_rows_right(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    input_path = write_input(tmp_path / "contacts.csv", 2, blank={2: "plan"})
    output = tmp_path / "results.csv"
    port = free_port()
    flows = write_flows(tmp_path / "flows.json")
    slow = serve("--port", str(port), "--flows", str(flows), "--latency", "1000")
    args = run_args(input_path, output, slow.url)
    with launched(tmp_path, args) as run:
        wait_until(lambda: failed_row_recorded(output, 2), "a failed record", run)
        run.process.kill()
    slow.stop()
    serve("--port", str(port))

    retried = batchrun([*args, "--retry-failed"])

    assert in_doubt_counts(retried.stderr) == (1, 1)
    last = {r["row"]: r["status"] for r in read_output(output)}
    assert last == {"1": "succeeded", "2": "succeeded"}
    assert "  whole output so far: 2 succeeded\n" in retried.stderr
    assert retried.code == EXIT_OK


def test_plain_resume_after_retry_failed_sends_no_recorded_row_again(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    rows = 1000
    service = serve("--latency", "30-120")
    input_path = write_input(tmp_path / "contacts.csv", rows)
    output = tmp_path / "results.csv"
    args = run_args(input_path, output, service.url, "--concurrency", "100")
    with launched(tmp_path, args) as run:
        wait_until(lambda: len(complete_records(output)) >= 200, "records", run)
        run.process.kill()
    retried = batchrun([*args, "--retry-failed"])
    assert retried.code in (EXIT_OK, EXIT_ROWS_FAILED), retried.stderr

    resumed = batchrun(args)

    records = read_output(output)
    assert_one_record_per_row(records, rows)
    assert unflagged_resends(records, requests_by_key(service)) == []
    assert resumed.code == EXIT_OK, resumed.stderr


# --key-column


def test_key_column_duplicates_refused_before_any_request(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    service = serve()
    keys = ["a1", "a2", "a3", "a2", "a5", "a1"]
    input_path = write_input(tmp_path / "contacts.csv", 6, keys=keys)
    output = tmp_path / "results.csv"

    result = batchrun(run_args(input_path, output, service.url, "--key-column", "id"))

    assert result.code == EXIT_USAGE
    assert result.stderr == (
        f"batchrun: error: {input_path}: --key-column id has duplicate keys: 'a2' "
        "on lines 3 and 5; 'a1' on lines 2 and 7; make the keys unique or use "
        "row numbers\n"
    )
    assert not output.exists()
    assert not Path(f"{output}.checkpoint").exists()
    assert requests_by_key(service) == {}


def test_key_column_run_resumes_after_a_kill(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    rows = 300
    service = serve("--latency", "20-60")
    keys = [f"c-{n:04d}" for n in random.Random(7).sample(range(10_000), rows)]
    input_path = write_input(tmp_path / "contacts.csv", rows, keys=keys)
    output = tmp_path / "results.csv"
    args = run_args(
        input_path, output, service.url, "--key-column", "id", "--concurrency", "50"
    )
    with launched(tmp_path, args) as run:
        wait_until(
            lambda: len(complete_records(output, KEY_FIELDS)) >= 40, "records", run
        )
        run.process.kill()
    partial = complete_records(output, KEY_FIELDS)

    resumed = batchrun(args)

    assert resumed.code == EXIT_OK, resumed.stderr
    records = read_output(output, KEY_FIELDS)
    assert records[: len(partial)] == partial
    assert_one_record_per_row(records, rows)
    assert [r["key"] for r in sorted(records, key=lambda r: int(r["row"]))] == keys
    requests = requests_by_key(service)
    assert set(requests) == {r["row_id"] for r in records}
    assert len(requests) == rows
    sent_for = {
        record["key"]: {r["variables"]["id"] for r in requests[record["row_id"]]}
        for record in records
    }
    assert [key for key, ids in sent_for.items() if ids != {key}] == []
    assert unmatched_sessions(records, requests) == []
    assert unflagged_resends(records, requests) == []


# An output that cannot be written


def test_output_path_that_is_a_directory_is_refused(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    service = serve()
    input_path = write_input(tmp_path / "contacts.csv", 5)
    output = tmp_path / "results.csv"
    output.mkdir()

    result = batchrun(run_args(input_path, output, service.url))

    assert result.code == EXIT_USAGE
    assert result.stderr == (
        f"batchrun: error: {output} already exists and has no checkpoint beside "
        "it; choose another -o, or pass --restart to keep it under a new name and "
        "start over\n"
    )
    assert requests_by_key(service) == {}


def test_output_replaced_by_a_directory_fails_cleanly_on_resume(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    service = serve()
    input_path = write_input(tmp_path / "contacts.csv", 20)
    output = tmp_path / "results.csv"
    args = run_args(input_path, output, service.url)
    assert batchrun([*args, "--limit", "5"]).code == EXIT_OK
    output.unlink()
    output.mkdir()

    result = batchrun(args)

    assert result.code in (EXIT_USAGE, EXIT_ABORTED)
    assert re.fullmatch(r"batchrun: error: [^\n]+\n", result.stderr), result.stderr


def test_disk_full_while_resuming_stops_cleanly_and_resumes_later(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    rows = 400
    service = serve("--latency", "5-20")
    input_path = write_input(tmp_path / "contacts.csv", rows)
    output = tmp_path / "results.csv"
    args = run_args(input_path, output, service.url)
    assert batchrun([*args, "--limit", "5"]).code == EXIT_OK
    limit = output.stat().st_size + 4096

    full = batchrun(args, preexec_fn=file_size_limit(limit))

    assert full.code == EXIT_ABORTED, full.stderr
    assert "Traceback" not in full.stderr
    errors = [line for line in full.stderr.splitlines() if "error" in line]
    assert len(errors) == 1
    assert re.fullmatch(
        r"batchrun: error: \S+: cannot write the (output|checkpoint) \(File too "
        r"large\); free space or fix permissions, then run the same command "
        r"(again )?to resume",
        errors[0],
    )
    partial = read_output(output)

    resumed = batchrun(args)

    assert resumed.code == EXIT_OK, resumed.stderr
    records = read_output(output)
    assert records[: len(partial)] == partial
    assert_one_record_per_row(records, rows)
    requests = requests_by_key(service)
    assert unmatched_sessions(records, requests) == []
    assert unflagged_resends(records, requests) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to read-only folders")
def test_read_only_output_folder_fails_cleanly_on_resume(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    service = serve()
    input_path = write_input(tmp_path / "contacts.csv", 20)
    folder = tmp_path / "out"
    folder.mkdir()
    output = folder / "results.csv"
    args = run_args(input_path, output, service.url)
    assert batchrun([*args, "--limit", "5"]).code == EXIT_OK
    folder.chmod(0o555)
    try:
        result = batchrun(args)
    finally:
        folder.chmod(0o755)

    assert result.code == EXIT_ABORTED
    assert result.stderr == (
        f"batchrun: error: {output}.checkpoint: cannot write the checkpoint "
        "(Permission denied); free space or fix permissions, then run the same "
        "command to resume\n"
    )


# Records ahead of the watermark


def test_failed_row_recorded_ahead_survives_two_interruptions(
    tmp_path: Path, serve: Callable[..., Service]
) -> None:
    # Rows 2 and 4 lack "plan" and fail at once; rows 1 and 3 take a second,
    # so both interrupted runs leave the failed rows' records ahead of the
    # watermark. --grace 0 stops without waiting for the slow rows.
    flows = write_flows(tmp_path / "flows.json")
    service = serve("--flows", str(flows), "--latency", "1000")
    input_path = write_input(tmp_path / "contacts.csv", 4, blank={2: "plan", 4: "plan"})
    output = tmp_path / "results.csv"
    args = run_args(input_path, output, service.url, "--grace", "0")
    for concurrency, row in (("2", 2), ("3", 4)):
        with launched(tmp_path, [*args, "--concurrency", concurrency]) as run:
            wait_until(lambda r=row: failed_row_recorded(output, r), "failure", run)
            run.process.send_signal(signal.SIGINT)
            assert run.finish().code == EXIT_INTERRUPTED

    final = batchrun([*args, "--concurrency", "3"])

    records = read_output(output)
    assert_one_record_per_row(records, 4)
    requests = requests_by_key(service)
    run_id = run_id_of(records)
    assert len(requests[f"{run_id}-2"]) == 1
    assert final.code == EXIT_ROWS_FAILED
