"""End to end: the results people act on, from the real CLI and service.

Every test writes its input in ``tmp_path``, runs ``python -m batchrun run``
as a subprocess against a `batchrun serve` on loopback (with required
variables and injected failures where a test needs failed rows), then reads
what a person would open: the output in each format, the failed-rows file,
the --summary-json file and the --log-format json lines. Requests are
matched to rows through the Idempotency-Key header, "<run_id>-<row>".
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from conftest import Service, logged, read_output, run_id

TOKEN = "tok-results-9a2f6e1c4b7d3058"
ORG = "demo-org"
FLOW = "welcome-message"
RUN_TIMEOUT = 60
ERROR_LIMIT = 200  # the longest error text an output holds
PTY_COLUMNS = 100


# Running the CLI


def environment() -> dict[str, str]:
    """This process's environment with no BATCHRUN_* but the test token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHRUN_")}
    env["BATCHRUN_TOKEN"] = TOKEN
    return env


def run_args(
    service: Service, input_path: Path, output: Path, *extra: str, flow: str = FLOW
) -> list[str]:
    return [
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
        ORG,
        "--flow",
        flow,
        *extra,
    ]


def run_batch(
    service: Service, input_path: Path, output: Path, *extra: str, flow: str = FLOW
) -> subprocess.CompletedProcess[str]:
    """`batchrun run INPUT -o OUTPUT` against ``service``, in the output's folder.

    The working directory is the test's own, so no batchrun.toml of the
    machine's can change an option.
    """
    return subprocess.run(
        run_args(service, input_path, output, *extra, flow=flow),
        cwd=output.parent,
        env=environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def run_on_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``args`` with stderr on a pseudo-terminal; return exit code and stderr."""
    master, slave = pty.openpty()
    tty.setraw(slave)  # no newline translation: the bytes are what was written
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, PTY_COLUMNS, 0, 0))
    with subprocess.Popen(
        args,
        cwd=cwd,
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
    ) as process:
        os.close(slave)
        data = b""
        deadline = time.monotonic() + RUN_TIMEOUT
        while (remaining := deadline - time.monotonic()) > 0:
            if not select.select([master], [], [], remaining)[0]:
                process.kill()
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            data += chunk
        os.close(master)
        code = process.wait(timeout=RUN_TIMEOUT)
    return code, data.decode("utf-8", "replace")


def requests_by_row(
    records: list[dict[str, Any]], output: Path
) -> dict[int, list[dict[str, Any]]]:
    """Row number -> its requests, in log order, for the run that wrote ``output``."""
    prefix = run_id(output) + "-"
    grouped: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        key = record["idempotency_key"]
        if key.startswith(prefix):
            grouped.setdefault(int(key[len(prefix) :]), []).append(record)
    return grouped


def sent(records: list[dict[str, Any]], output: Path) -> dict[int, Any]:
    """Row number -> the variables of its only request."""
    grouped = requests_by_row(records, output)
    assert all(len(requests) == 1 for requests in grouped.values()), grouped
    return {number: requests[0]["variables"] for number, requests in grouped.items()}


# Reading what a person opens


def by_row(path: Path) -> dict[int, dict[str, Any]]:
    records = read_output(path)
    result = {int(record["row"]): record for record in records}
    assert len(result) == len(records), "a row has more than one record"
    return result


def last_records(path: Path) -> dict[str, str]:
    """Key -> status of its last record: the one that counts."""
    return {record["key"]: record["status"] for record in read_output(path)}


def read_failed(path: Path) -> list[dict[str, Any]]:
    """The rows of a failed-rows file (.failed.csv or .failed.jsonl)."""
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as file:
            return list(csv.DictReader(file))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# Writing inputs


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_flows(path: Path, *flows: tuple[str, list[str]]) -> Path:
    entries = [{"org": ORG, "flow": f, "required": r} for f, r in flows]
    path.write_text(json.dumps({"flows": entries}), encoding="utf-8")
    return path


# 1. Hostile cells: neutralized where a spreadsheet opens them, raw elsewhere

# input cell -> what a CSV or Excel output shows
HOSTILE = {
    '=HYPERLINK("http://x")': '\'=HYPERLINK("http://x")',
    "+1+1": "'+1+1",
    "-cmd": "'-cmd",
    "@SUM(A1)": "'@SUM(A1)",
    "\ttab": "'\ttab",
    "\rcr": "'\rcr",
    "-5": "-5",
    "+15550100": "+15550100",  # a plain number, so it is left alone
    "-1.5e3": "-1.5e3",
    "plain": "plain",
}
STATUS_OF = {200: "succeeded", 400: "failed", 500: "failed"}


def hostile_input(path: Path) -> tuple[Path, dict[int, dict[str, str]]]:
    """Hostile notes; every third row lacks the required email (a 400)."""
    rows = [
        ["" if number % 3 == 0 else f"u{number}@x", note]
        for number, note in enumerate(HOSTILE, start=1)
    ]
    write_csv(path, ["email", "note"], rows)
    expected = {
        number: {"email": email, "note": note}
        for number, (email, note) in enumerate(rows, start=1)
    }
    return path, expected


@pytest.mark.parametrize("suffix", [".csv", ".xlsx", ".jsonl", ".parquet"])
def test_hostile_cells_are_neutralized_only_in_spreadsheet_outputs(
    serve: Any, tmp_path: Path, suffix: str
) -> None:
    flows = write_flows(tmp_path / "flows.json", (FLOW, ["email"]))
    service = serve("--flows", str(flows), "--fail-rate", "0.3", "--seed", "4")
    input_path, rows = hostile_input(tmp_path / "in.csv")
    output = tmp_path / f"out{suffix}"

    result = run_batch(
        service, input_path, output, "--max-attempts", "1", "--include-input", "-q"
    )
    records = logged(service)
    outcomes = by_row(output)

    assert result.returncode == 1, result.stderr
    assert {record["status"] for record in records} == {200, 400, 500}
    assert sent(records, output) == rows  # the service gets the raw values
    statuses = {
        n: STATUS_OF[r[0]["status"]]
        for n, r in requests_by_row(records, output).items()
    }
    assert {n: o["status"] for n, o in outcomes.items()} == statuses
    shown = {n: o["note"] for n, o in outcomes.items()}
    if suffix in (".csv", ".xlsx"):
        expected = {n: HOSTILE[row["note"]] for n, row in rows.items()}
        if suffix == ".xlsx":
            # XML line-end normalization turns a stored CR into LF.
            expected = {n: note.replace("\r", "\n") for n, note in expected.items()}
        assert shown == expected
    else:
        assert shown == {n: row["note"] for n, row in rows.items()}


def test_xlsx_output_header_never_holds_a_formula(serve: Any, tmp_path: Path) -> None:
    service = serve()
    header = ['=HYPERLINK("http://x")', "@cmd"]
    input_path = write_csv(tmp_path / "in.csv", header, [["1", "2"]])
    output = tmp_path / "out.xlsx"

    result = run_batch(service, input_path, output, "--include-input", "-q")
    service.stop()
    workbook = openpyxl.load_workbook(output)
    first = [(cell.value, cell.data_type) for cell in workbook.worksheets[0][1]][:2]

    assert result.returncode == 0, result.stderr
    assert first == [('\'=HYPERLINK("http://x")', "s"), ("'@cmd", "s")]


# 2. The failed-rows file: the rows to fix, as the input held them

PEOPLE_HEADER = ["email", "name", "plan"]
PEOPLE = [
    ["a@x", "Ann", "gold"],  # succeeds
    ["", "Bob", "silver"],  # 400: the flow requires email
    ["c@x", "", "gold"],  # invalid: --require name
    ["d@x", "Di", ""],  # succeeds
    ["", '=HYPERLINK("x")', "-5"],  # 400, hostile but kept raw
]
FAILED_ROWS = (2, 3, 5)


def people_input(path: Path) -> Path:
    """PEOPLE with a "visits" column: a number in JSON Lines, text in CSV."""
    if path.suffix == ".jsonl":
        rows = [dict(zip(PEOPLE_HEADER, row, strict=True)) for row in PEOPLE]
        for number, row in enumerate(rows, start=1):
            row["visits"] = number
        return write_jsonl(path, rows)
    rows_with_visits = [[*row, str(n)] for n, row in enumerate(PEOPLE, start=1)]
    return write_csv(path, [*PEOPLE_HEADER, "visits"], rows_with_visits)


def expected_failed(input_path: Path, output: Path) -> list[dict[str, Any]]:
    """The failed-rows file's rows: input values plus the output's error."""
    errors = {n: o["error"] for n, o in by_row(output).items()}
    expected = []
    for number in FAILED_ROWS:
        values: dict[str, Any] = dict(
            zip(PEOPLE_HEADER, PEOPLE[number - 1], strict=True)
        )
        values["visits"] = number if input_path.suffix == ".jsonl" else str(number)
        expected.append({**values, "batchrun_error": errors[number]})
    return expected


@pytest.mark.parametrize(
    ("input_name", "output_name", "failed_name"),
    [
        ("in.csv", "results.csv", "results.failed.csv"),
        ("in.csv", "results.xlsx", "results.failed.csv"),
        ("in.jsonl", "results.parquet", "results.failed.jsonl"),
    ],
)
def test_failed_rows_file_holds_exactly_the_failed_and_invalid_rows(
    serve: Any, tmp_path: Path, input_name: str, output_name: str, failed_name: str
) -> None:
    flows = write_flows(tmp_path / "flows.json", (FLOW, ["email"]))
    service = serve("--flows", str(flows))
    input_path = people_input(tmp_path / input_name)
    output = tmp_path / output_name

    result = run_batch(service, input_path, output, "--require", "name", "-q")
    service.stop()

    assert result.returncode == 1, result.stderr
    failed = tmp_path / failed_name
    assert read_failed(failed) == expected_failed(input_path, output)
    assert [o["status"] for o in by_row(output).values()].count("succeeded") == 2
    notice = f"  failed and invalid rows, ready to fix and run again: {failed}"
    assert notice in result.stderr.splitlines()


def test_failed_out_option_chooses_where_the_file_goes(
    serve: Any, tmp_path: Path
) -> None:
    flows = write_flows(tmp_path / "flows.json", (FLOW, ["email"]))
    service = serve("--flows", str(flows))
    input_path = people_input(tmp_path / "in.csv")
    output = tmp_path / "results.csv"
    target = tmp_path / "to-fix" / "monday.csv"
    target.parent.mkdir()

    result = run_batch(
        service, input_path, output, "--require", "name", "--failed-out", str(target)
    )
    service.stop()

    assert result.returncode == 1, result.stderr
    assert read_failed(target) == expected_failed(input_path, output)
    assert not (tmp_path / "results.failed.csv").exists()


def test_fixed_failed_rows_fed_back_are_sent_without_the_error_column(
    serve: Any, tmp_path: Path
) -> None:
    flows = write_flows(tmp_path / "flows.json", (FLOW, ["email"]))
    service = serve("--flows", str(flows))
    input_path = people_input(tmp_path / "in.csv")
    first = run_batch(service, input_path, tmp_path / "first.csv", "--require", "name")
    rows = read_failed(tmp_path / "first.failed.csv")  # input rows 2, 3 and 5
    rows[0]["email"], rows[1]["name"], rows[2]["email"] = "b@x", "Cy", "e@x"
    header = list(rows[0])
    fixed = write_csv(
        tmp_path / "fixed.csv", header, [list(row.values()) for row in rows]
    )
    second = tmp_path / "second.csv"

    result = run_batch(service, fixed, second, "--require", "name")
    records = logged(service)

    assert (first.returncode, result.returncode) == (1, 0), result.stderr
    assert header == ["email", "name", "plan", "visits", "batchrun_error"]
    assert sent(records, second) == {
        1: {"email": "b@x", "name": "Bob", "plan": "silver", "visits": "2"},
        2: {"email": "c@x", "name": "Cy", "plan": "gold", "visits": "3"},
        3: {"email": "e@x", "name": '=HYPERLINK("x")', "plan": "-5", "visits": "5"},
    }
    assert not (tmp_path / "second.failed.csv").exists()


def test_check_of_a_failed_rows_file_shows_what_run_sends(
    serve: Any, tmp_path: Path
) -> None:
    flows = write_flows(tmp_path / "flows.json", (FLOW, ["email"]))
    service = serve("--flows", str(flows))
    input_path = people_input(tmp_path / "in.csv")
    run_batch(service, input_path, tmp_path / "first.csv", "--require", "name")
    service.stop()
    failed = tmp_path / "first.failed.csv"

    checked = subprocess.run(
        [sys.executable, "-m", "batchrun", "check", str(failed)],
        cwd=tmp_path,
        env=environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )

    lines = checked.stdout.splitlines()
    examples = [
        json.loads(line.partition(": ")[2])
        for line in lines
        if line.startswith("example ")
    ]
    assert checked.returncode == 0, checked.stderr
    assert "variables sent: email, name, plan, visits" in lines
    assert [sorted(example) for example in examples] == [
        ["email", "name", "plan", "visits"]
    ] * 3


def test_failed_rows_file_keeps_the_cells_of_a_ragged_row(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    input_path = tmp_path / "in.csv"
    input_path.write_text("email,name,plan\na@x,Ann,gold\nc@x,Cy\n", encoding="utf-8")
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output)
    service.stop()

    assert result.returncode == 1
    assert read_failed(tmp_path / "out.failed.csv") == [
        {
            "email": "c@x",
            "name": "Cy",
            "plan": "",
            "batchrun_error": "line 3: 2 fields, expected 3 (header has 3 columns)",
        }
    ]


def test_unparsable_line_fed_back_unchanged_is_not_executed(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    input_path = tmp_path / "in.jsonl"
    input_path.write_text('{"id": 1}\n{"id": 2,\n', encoding="utf-8")
    first = run_batch(service, input_path, tmp_path / "first.csv")
    second = tmp_path / "second.csv"

    result = run_batch(service, tmp_path / "first.failed.jsonl", second)
    records = logged(service)

    assert first.returncode == 1
    assert requests_by_row(records, second) == {}
    assert result.returncode == 1


def test_failed_rows_file_follows_retry_failed_until_it_is_gone(
    serve: Any, tmp_path: Path
) -> None:
    flows = write_flows(tmp_path / "flows.json", (FLOW, ["email"]))
    flaky = serve("--flows", str(flows), "--fail-rate", "0.5", "--seed", "2")
    header = ["id", "email", "name"]
    rows = [[str(n), "" if n in (3, 7) else f"u{n}@x", f"n{n}"] for n in range(1, 13)]
    input_path = write_csv(tmp_path / "in.csv", header, rows)
    output = tmp_path / "out.csv"
    failed = tmp_path / "out.failed.csv"
    options = ("--key-column", "id", "--max-attempts", "1", "-q")

    first = run_batch(flaky, input_path, output, *options)
    statuses = {r["variables"]["id"]: r["status"] for r in logged(flaky)}
    after_first = [row["id"] for row in read_failed(failed)]
    steady = serve("--flows", str(flows), "--port", flaky.url.rsplit(":", 1)[1])
    second = run_batch(steady, input_path, output, *options, "--retry-failed")
    after_second = [row["id"] for row in read_failed(failed)]
    rows[2][1], rows[6][1] = "u3@x", "u7@x"
    write_csv(input_path, header, rows)
    third = run_batch(steady, input_path, output, *options, "--retry-failed")
    retried = sorted(r["variables"]["id"] for r in logged(steady))

    assert (first.returncode, second.returncode, third.returncode) == (1, 1, 0)
    assert set(statuses.values()) == {200, 400, 500}
    failing = [i for i, status in statuses.items() if status != 200]
    assert after_first == sorted(failing, key=int)
    assert after_second == ["3", "7"]
    assert not failed.exists()
    assert retried == sorted([*after_first, "3", "7"])
    assert set(last_records(output).values()) == {"succeeded"}


def test_retry_failed_by_key_leaves_one_record_per_row(
    serve: Any, tmp_path: Path
) -> None:
    flows = write_flows(tmp_path / "flows.json", (FLOW, ["email"]))
    service = serve("--flows", str(flows))
    header = ["id", "email"]
    rows = [["1", "a@x"], ["2", ""], ["3", "c@x"]]
    input_path = write_csv(tmp_path / "in.csv", header, rows)
    output = tmp_path / "out.csv"
    options = ("--key-column", "id", "-q")

    first = run_batch(service, input_path, output, *options)
    rows[1][1] = "b@x"
    write_csv(input_path, header, rows)
    second = run_batch(service, input_path, output, *options, "--retry-failed")
    service.stop()

    assert (first.returncode, second.returncode) == (1, 0)
    assert [(r["key"], r["status"]) for r in read_output(output)] == [
        ("1", "succeeded"),
        ("3", "succeeded"),
        ("2", "succeeded"),
    ]


# 3. --summary-json and --log-format json, for scheduled jobs


@pytest.mark.parametrize(
    ("rows", "counts", "code"),
    [
        ([["a@x", "Ann"], ["b@x", "Bob"]], {"succeeded": 2}, 0),
        (
            [["a@x", "Ann"], ["", "Bob"], ["c@x", ""]],
            {"succeeded": 1, "failed": 1, "invalid": 1},
            1,
        ),
    ],
    ids=["clean", "failures"],
)
def test_summary_json_counts_and_exit_code_match_the_run(
    serve: Any,
    tmp_path: Path,
    rows: list[list[str]],
    counts: dict[str, int],
    code: int,
) -> None:
    flows = write_flows(tmp_path / "flows.json", (FLOW, ["email"]))
    service = serve("--flows", str(flows))
    input_path = write_csv(tmp_path / "in.csv", ["email", "name"], rows)
    output = tmp_path / "out.csv"
    summary_path = tmp_path / "summary.json"

    result = run_batch(
        service,
        input_path,
        output,
        "--require",
        "name",
        "--summary-json",
        str(summary_path),
    )
    service.stop()
    summary = json.loads(summary_path.read_text(encoding="utf-8"))

    assert result.returncode == code, result.stderr
    assert summary["exit_code"] == result.returncode
    statuses = ("succeeded", "failed", "invalid", "unknown")
    assert {status: summary[status] for status in statuses} == {
        status: counts.get(status, 0) for status in statuses
    }
    assert summary["totals"] == counts
    assert (summary["read"], summary["requests"]) == (
        len(rows),
        len(rows) - counts.get("invalid", 0),
    )
    assert (summary["complete"], summary["aborted"], summary["output"]) == (
        True,
        None,
        str(output),
    )
    bad = len(rows) - counts["succeeded"]
    failed_out = str(tmp_path / "out.failed.csv") if bad else None
    assert (summary["failed_out"], summary["failed_rows"]) == (failed_out, bad)


def test_summary_json_of_an_aborted_run_holds_exit_code_3(
    serve: Any, tmp_path: Path
) -> None:
    service = serve(env={"BATCHRUN_SERVE_TOKEN": "another-token"})
    input_path = write_csv(tmp_path / "in.csv", ["a"], [["1"], ["2"]])
    summary_path = tmp_path / "summary.json"

    result = run_batch(
        service, input_path, tmp_path / "out.csv", "--summary-json", str(summary_path)
    )
    service.stop()
    summary = json.loads(summary_path.read_text(encoding="utf-8"))

    assert result.returncode == 3
    assert (summary["exit_code"], summary["complete"]) == (3, False)
    assert summary["aborted"] == "HTTP 401: Unauthorized: missing or invalid token"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ("--rate", "fast"),
            "--rate 'fast' is not a rate; write requests per second or minute, for "
            "example --rate 20/s or --rate 600/min",
        ),
        (("--concurrency", "0"), "--concurrency must be at least 1, got 0"),
    ],
    ids=["rate", "concurrency"],
)
def test_summary_json_on_a_usage_error_holds_exit_code_2_and_the_error(
    serve: Any, tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    service = serve()
    input_path = write_csv(tmp_path / "in.csv", ["a"], [["1"]])
    summary_path = tmp_path / "summary.json"

    result = run_batch(
        service,
        input_path,
        tmp_path / "out.csv",
        *extra,
        "--summary-json",
        str(summary_path),
    )

    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"batchrun: error: {message}"]
    assert json.loads(summary_path.read_text(encoding="utf-8")) == {
        "exit_code": 2,
        "error": message,
    }
    assert logged(service) == []


@pytest.mark.parametrize("aspect", ["summary-json", "log-format"])
def test_malformed_option_value_is_reported_as_asked(
    serve: Any, tmp_path: Path, aspect: str
) -> None:
    service = serve()
    input_path = write_csv(tmp_path / "in.csv", ["a"], [["1"]])
    summary_path = tmp_path / "summary.json"

    result = run_batch(
        service,
        input_path,
        tmp_path / "out.csv",
        "--concurrency",
        "many",
        "--summary-json",
        str(summary_path),
        "--log-format",
        "json",
    )
    service.stop()

    assert result.returncode == 2
    if aspect == "summary-json":
        assert json.loads(summary_path.read_text(encoding="utf-8"))["exit_code"] == 2
    else:
        lines = result.stderr.splitlines()
        assert lines and all(line.startswith("{") for line in lines), lines
        assert [json.loads(line)["event"] for line in lines] == ["error"]


def test_json_log_format_draws_no_bar_even_on_a_terminal(
    serve: Any, tmp_path: Path
) -> None:
    service = serve("--latency", "2")
    rows = [[f"n{n}"] for n in range(40)]
    input_path = write_csv(tmp_path / "in.csv", ["name"], rows)
    text_args = run_args(service, input_path, tmp_path / "text.csv")
    json_args = run_args(
        service, input_path, tmp_path / "json.csv", "--log-format", "json"
    )

    text_code, text_stderr = run_on_terminal(text_args, tmp_path)
    code, stderr = run_on_terminal(json_args, tmp_path)
    service.stop()
    events = [json.loads(line) for line in stderr.splitlines()]

    assert (text_code, code) == (0, 0), stderr
    assert "%|" in text_stderr and "row/s" in text_stderr  # the bar, as a control
    assert "\r" not in stderr
    assert all(isinstance(event, dict) for event in events)
    assert (events[0]["event"], events[-1]["event"]) == ("start", "summary")
    config = events[0]["config"]
    assert (config["base_url"], config["org"], config["flow"]) == (
        service.url,
        ORG,
        FLOW,
    )
    assert not [key for key in config if "token" in key]
    assert TOKEN not in stderr
    assert (events[-1]["exit_code"], events[-1]["succeeded"]) == (0, 40)


def test_json_log_format_reports_a_usage_error_as_json(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    input_path = write_csv(tmp_path / "in.csv", ["a"], [["1"]])

    result = run_batch(
        service,
        input_path,
        tmp_path / "out.csv",
        "--rate",
        "fast",
        "--log-format",
        "json",
    )

    assert result.returncode == 2
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(e["event"], e["exit_code"]) for e in events] == [("error", 2)]
    assert events[0]["message"].startswith("--rate 'fast' is not a rate")
    assert logged(service) == []


# 4. The token is nowhere a person or a log collector could read it


def test_token_is_absent_from_every_file_and_message(
    serve: Any, tmp_path: Path
) -> None:
    flows = write_flows(tmp_path / "flows.json", (FLOW, ["email"]))
    service = serve(
        "--flows",
        str(flows),
        "--fail-rate",
        "0.4",
        "--seed",
        "9",
        env={"BATCHRUN_SERVE_TOKEN": TOKEN},
    )
    rows = [["" if n % 4 == 0 else f"u{n}@x", f"n{n}"] for n in range(1, 17)]
    input_path = write_csv(tmp_path / "in.csv", ["email", "name"], rows)
    output = tmp_path / "out.xlsx"
    options = (
        "--include-input",
        "--max-attempts",
        "1",
        "--log-format",
        "json",
        "--summary-json",
        str(tmp_path / "summary.json"),
    )

    first = run_batch(service, input_path, output, *options)
    second = run_batch(service, input_path, output, *options, "--retry-failed")
    records = logged(service)

    assert (first.returncode, second.returncode) == (1, 1)
    assert {record["status"] for record in records} == {200, 400, 500}
    names = {path.name for path in tmp_path.iterdir()}
    assert {
        "out.xlsx",
        "out.xlsx.journal.jsonl",
        "out.xlsx.checkpoint",
        "out.failed.csv",
        "summary.json",
    } <= names
    for text in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert TOKEN not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


# 5. Service error text in the output: bounded, printable, redacted

CONTROLS = "bad\x1b[2J\x07name\u2028\x85end"
HUGE = [f"v{number:05d}_{'x' * 30}" for number in range(3000)]  # over 64 KiB


def test_service_error_text_is_bounded_printable_and_redacted(
    serve: Any, tmp_path: Path
) -> None:
    service_dir = tmp_path / "service"
    service_dir.mkdir()
    flows = write_flows(
        service_dir / "flows.json",
        ("controls", [CONTROLS]),
        ("huge", HUGE),
        ("echo", [f"Bearer {TOKEN}", f"key {TOKEN}"]),
    )
    service = serve("--flows", str(flows))
    input_path = write_csv(tmp_path / "in.csv", ["a"], [["1"]])

    flows_run = ("controls", "huge", "echo")
    results = [
        run_batch(service, input_path, tmp_path / f"{flow}.csv", "-q", flow=flow)
        for flow in flows_run
    ]
    service.stop()
    errors = {flow: by_row(tmp_path / f"{flow}.csv")[1]["error"] for flow in flows_run}

    assert [result.returncode for result in results] == [1, 1, 1]
    assert (
        errors["controls"] == "HTTP 400: Missing required variable(s): bad [2J name end"
    )
    assert errors["echo"] == (
        "HTTP 400: Missing required variable(s): Bearer [redacted], key [redacted]"
    )
    huge = errors["huge"]
    assert len(huge) == ERROR_LIMIT and huge.endswith("…")
    assert huge.startswith("HTTP 400: ") and "required variable(s): v00000_x" in huge
    assert all(error.isprintable() for error in errors.values())
    assert not [r for r in results if TOKEN in r.stdout + r.stderr]
    for path in tmp_path.glob("*.*"):  # all but the flows file, which names it
        assert TOKEN.encode() not in path.read_bytes(), path


def test_service_error_text_has_no_invisible_format_characters(
    serve: Any, tmp_path: Path
) -> None:
    flows = write_flows(tmp_path / "flows.json", (FLOW, ["invoice\u202efdp.exe\u200b"]))
    service = serve("--flows", str(flows))
    input_path = write_csv(tmp_path / "in.csv", ["a"], [["1"]])
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "-q")
    service.stop()

    assert result.returncode == 1
    assert by_row(output)[1]["error"].isprintable()
