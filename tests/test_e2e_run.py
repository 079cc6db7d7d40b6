"""End to end: the real `batchrun run` CLI against the real `batchrun serve`.

Every test writes its own input in ``tmp_path``, runs ``python -m batchrun run``
as a subprocess against a service on loopback, then checks the service's
request log, the output file and what the CLI printed. Requests are matched
to rows through the Idempotency-Key header, which is "<run_id>-<row>".
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Service, logged, read_output, run_id

TOKEN = "tok-e2e-5f1c9a7d3b82e6"
ORG = "demo-org"
FLOW = "welcome-message"
RUN_TIMEOUT = 60
RESULT_FIELDS = [
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
BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 1024 * 1024  # what the text readers decode at a time
STARTED_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


# Running the CLI


def cli(
    *args: str, token: str | None = TOKEN, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m batchrun ARGS` with no BATCHRUN_* setting but ``env``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BATCHRUN_")}
    if token is not None:
        environment["BATCHRUN_TOKEN"] = token
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "batchrun", *args],
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def run_batch(
    service: Service,
    input_path: Path,
    output: Path,
    *extra: str,
    org: str = ORG,
    flow: str = FLOW,
    token: str | None = TOKEN,
) -> subprocess.CompletedProcess[str]:
    """`batchrun run INPUT -o OUTPUT` against ``service``."""
    return cli(
        "run",
        str(input_path),
        "-o",
        str(output),
        "--base-url",
        service.url,
        "--org",
        org,
        "--flow",
        flow,
        *extra,
        token=token,
    )


def by_row(records: list[dict[str, Any]], output: Path) -> dict[int, list[Any]]:
    """The logged requests, by row number; each must belong to that run."""
    prefix = run_id(output) + "-"
    grouped: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        key = record["idempotency_key"]
        assert key is not None and key.startswith(prefix), key
        grouped.setdefault(int(key[len(prefix) :]), []).append(record)
    return grouped


def sent_variables(records: list[dict[str, Any]], output: Path) -> dict[int, Any]:
    """Row number -> the variables of its only request."""
    grouped = by_row(records, output)
    assert all(len(requests) == 1 for requests in grouped.values()), grouped
    return {row: requests[0]["variables"] for row, requests in grouped.items()}


# Reading outputs


def output_fields(path: Path) -> list[str]:
    """The column names of an output, in order."""
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as file:
            return next(csv.reader(file))
    if path.suffix == ".jsonl":
        first = path.read_text(encoding="utf-8").split("\n")[0]
        return list(json.loads(first))
    return list(pq.read_schema(path).names)


def records_by_row(path: Path) -> dict[int, dict[str, Any]]:
    records = read_output(path)
    result = {int(record["row"]): record for record in records}
    assert len(result) == len(records), "a row has more than one record"
    return result


# Writing inputs


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def contacts(path: Path, count: int) -> Path:
    rows = [[f"name{n}", f"+1555{n:07d}", "gold"] for n in range(1, count + 1)]
    return write_csv(path, ["first_name", "phone", "plan"], rows)


def write_flows(path: Path, *flows: tuple[str, str, list[str]]) -> Path:
    entries = [{"org": o, "flow": f, "required": r} for o, f, r in flows]
    path.write_text(json.dumps({"flows": entries}), encoding="utf-8")
    return path


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stderr.splitlines()


# 1. CSV: every cell arrives as its exact text

EXACT_HEADER = ["id", "zip", "phone", "sci", "na", "none", "null", "nan", "big"]
EXACT_CELLS = ["00123", "+15550100", "1e5", "NA", "None", "null", "nan"]
BIG = "1234567890123456789"


def exact_csv(path: Path, newline: bytes) -> tuple[Path, dict[int, dict[str, str]]]:
    """A CSV of tricky cells (BOM, quoting) and the variables each row must send."""
    header = ",".join([*EXACT_HEADER, "note", "blank"])
    cells = ",".join([*EXACT_CELLS, BIG])
    lines = [
        f"{header}",
        f'1,{cells},"Smith, Ada",',
        f'2,{cells},"She said ""hi"", twice",',
        f'3,{cells},"line one\nline two",',
        f"4,{cells}, padded ,",
    ]
    text = newline.join(line.encode("utf-8") for line in lines) + newline
    path.write_bytes(BOM + text)
    notes = ["Smith, Ada", 'She said "hi", twice', "line one\nline two", " padded "]
    expected = {}
    for number, note in enumerate(notes, start=1):
        values = [str(number), *EXACT_CELLS, BIG, note, ""]
        expected[number] = dict(
            zip([*EXACT_HEADER, "note", "blank"], values, strict=True)
        )
    return path, expected


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_csv_cells_arrive_as_exact_text(
    serve: Any, tmp_path: Path, newline: bytes
) -> None:
    service = serve()
    input_path, expected = exact_csv(tmp_path / "in.csv", newline)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "-q")
    records = logged(service)

    assert (result.returncode, result.stdout) == (0, ""), result.stderr
    assert sent_variables(records, output) == expected


@pytest.mark.parametrize(
    ("policy", "blank"),
    [("text", {"blank": ""}), ("null", {"blank": None}), ("omit", {})],
)
def test_csv_empty_cell_follows_empty_option(
    serve: Any, tmp_path: Path, policy: str, blank: dict[str, Any]
) -> None:
    service = serve()
    input_path = write_csv(tmp_path / "in.csv", ["id", "blank"], [["1", ""]])
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "--empty", policy)
    records = logged(service)

    assert result.returncode == 0, result.stderr
    assert sent_variables(records, output) == {1: {"id": "1", **blank}}


def test_csv_short_row_is_invalid_naming_its_physical_line(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    input_path = tmp_path / "in.csv"
    input_path.write_text('id,note\n1,"two\nlines"\n2\n3,ok\n', encoding="utf-8")
    output = tmp_path / "out.jsonl"

    result = run_batch(service, input_path, output)
    records = logged(service)
    outcomes = records_by_row(output)

    assert result.returncode == 1
    assert sent_variables(records, output) == {
        1: {"id": "1", "note": "two\nlines"},
        3: {"id": "3", "note": "ok"},
    }
    assert [outcomes[n]["status"] for n in (1, 2, 3)] == [
        "succeeded",
        "invalid",
        "succeeded",
    ]
    assert outcomes[2]["error"] == "line 4: 1 fields, expected 2 (header has 2 columns)"


# 2. JSONL: types kept, bad lines recorded invalid


JSONL_FIRST = {
    "id": 1,
    "big": 12345678901234567890123,
    "neg": -98765432109876543210,
    "ratio": 0.1,
    "huge": 1.5e300,
    "yes": True,
    "no": False,
    "nothing": None,
    "nested": [1, [2, 3], {"k": "v"}],
    "object": {"a": {"b": [None, 2.5]}},
    "text": "00123",
}
JSONL_SECOND = {"id": 4, "unicode": "café ☕", "empty": ""}


def test_jsonl_keeps_types_and_records_bad_lines_invalid(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    bad = '{"id": 2, "x": }'
    lines = [
        json.dumps(JSONL_FIRST),  # line 1, row 1
        "",  # line 2, blank
        "   \t",  # line 3, blank
        bad,  # line 4, row 2
        "[1, 2]",  # line 5, row 3
        json.dumps(JSONL_SECOND, ensure_ascii=False),  # line 6, row 4
        '"just text"',  # line 7, row 5
        '{"id": 6, "n": NaN}',  # line 8, row 6
    ]
    input_path = tmp_path / "in.jsonl"
    input_path.write_bytes("\r\n".join(lines).encode("utf-8") + b"\r\n")
    output = tmp_path / "out.csv"
    with pytest.raises(json.JSONDecodeError) as parse_error:
        json.loads(bad)
    reason = f"{parse_error.value.msg} at column {parse_error.value.colno}"

    result = run_batch(service, input_path, output, "-q")
    records = logged(service)
    outcomes = records_by_row(output)

    assert result.returncode == 1
    assert sent_variables(records, output) == {1: JSONL_FIRST, 4: JSONL_SECOND}
    assert {n: r["status"] for n, r in outcomes.items()} == {
        1: "succeeded",
        2: "invalid",
        3: "invalid",
        4: "succeeded",
        5: "invalid",
        6: "invalid",
    }
    assert {n: outcomes[n]["error"] for n in (2, 3, 5, 6)} == {
        2: f"line 4: not valid JSON ({reason})",
        3: "line 5: a JSON array, expected an object",
        5: "line 7: a JSON string, expected an object",
        6: "line 8: not valid JSON (NaN is not allowed in strict JSON; use null "
        "or a number)",
    }
    assert {outcomes[n]["attempts"] for n in (2, 3, 5, 6)} == {"0"}
    assert "6 rows read: 2 succeeded, 0 failed, 4 invalid in " in result.stderr


# 3. Parquet: typed values made JSON-safe, every digit kept


def parquet_input(path: Path) -> Path:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
    struct = pa.struct([("a", pa.int64()), ("b", pa.string())])
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "big": pa.array([2**63 - 1, -(2**63), 0], pa.int64()),
            "real": pa.array([1.5, math.nan, None], pa.float64()),
            "at": pa.array([when, None, when], pa.timestamp("us")),
            "at_utc": pa.array([when, when, None], pa.timestamp("us", tz="UTC")),
            "at_ns": pa.array([1704164645123456789, None, 0], pa.timestamp("ns")),
            "day": pa.array([dt.date(2024, 2, 29), None, dt.date(1, 1, 1)]),
            "amount": pa.array(
                [
                    Decimal("12345678901234567890.1234567890"),
                    Decimal("-0.5"),
                    None,
                ],
                pa.decimal128(38, 10),
            ),
            "tags": pa.array([[1, 2], [], None], pa.list_(pa.int64())),
            "person": pa.array(
                [{"a": 1, "b": "x"}, None, {"a": None, "b": "y"}], struct
            ),
        }
    )
    pq.write_table(table, path)
    return path


PARQUET_EXPECTED = {
    1: {
        "id": 1,
        "big": 9223372036854775807,
        "real": 1.5,
        "at": "2024-01-02T03:04:05.123456",
        "at_utc": "2024-01-02T03:04:05.123456+00:00",
        "at_ns": "2024-01-02T03:04:05.123456789",
        "day": "2024-02-29",
        "amount": "12345678901234567890.1234567890",
        "tags": [1, 2],
        "person": {"a": 1, "b": "x"},
    },
    2: {
        "id": 2,
        "big": -9223372036854775808,
        "real": None,
        "at": None,
        "at_utc": "2024-01-02T03:04:05.123456+00:00",
        "at_ns": None,
        "day": None,
        "amount": "-0.5000000000",
        "tags": [],
        "person": None,
    },
    3: {
        "id": 3,
        "big": 0,
        "real": None,
        "at": "2024-01-02T03:04:05.123456",
        "at_utc": None,
        "at_ns": "1970-01-01T00:00:00",
        "day": "0001-01-01",
        "amount": None,
        "tags": None,
        "person": {"a": None, "b": "y"},
    },
}


def test_parquet_values_arrive_json_safe_and_exact(serve: Any, tmp_path: Path) -> None:
    service = serve()
    input_path = parquet_input(tmp_path / "in.parquet")
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output)
    records = logged(service)

    assert result.returncode == 0, result.stderr
    assert sent_variables(records, output) == PARQUET_EXPECTED


# 4. Every row exactly once, with its outcome


def test_every_row_is_sent_once_and_recorded_once(serve: Any, tmp_path: Path) -> None:
    service = serve("--latency", "1-10")
    input_path = contacts(tmp_path / "in.csv", 300)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "--concurrency", "16")
    records = logged(service)
    requests = by_row(records, output)
    outcomes = records_by_row(output)
    prefix = run_id(output)

    assert result.returncode == 0, result.stderr
    assert output_fields(output) == RESULT_FIELDS
    assert sorted(requests) == list(range(1, 301))
    assert {len(r) for r in requests.values()} == {1}
    assert len(records) == 300
    assert sorted(outcomes) == list(range(1, 301))
    for number, outcome in outcomes.items():
        request = requests[number][0]
        assert request["variables"] == {
            "first_name": f"name{number}",
            "phone": f"+1555{number:07d}",
            "plan": "gold",
        }
        assert outcome["session_id"] == request["session_id"]
        assert outcome["row_id"] == request["idempotency_key"] == f"{prefix}-{number}"
        assert (outcome["status"], outcome["http_status"]) == ("succeeded", "200")
        assert (outcome["attempts"], outcome["resent"], outcome["error"]) == (
            "1",
            "false",
            "",
        )
        assert STARTED_AT.fullmatch(outcome["started_at"])
        assert int(outcome["latency_ms"]) >= 0
    assert "300 rows read: 300 succeeded, 0 failed, 0 invalid" in result.stderr


# 5. Required variables: the service's 400 fails the row, without retry


def test_missing_required_variable_fails_the_row_once(
    serve: Any, tmp_path: Path
) -> None:
    flows = write_flows(tmp_path / "flows.json", ("acme", "signup", ["email", "name"]))
    service = serve("--flows", str(flows))
    rows = [["a@x", "Ann", "gold"], ["", "Bob", "gold"], ["c@x", "Cy", ""]]
    rows.append(["", "", "gold"])
    header = ["email", "name", "plan"]
    input_path = write_csv(tmp_path / "in.csv", header, rows)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, org="acme", flow="signup")
    requests = by_row(logged(service), output)
    outcomes = records_by_row(output)

    assert result.returncode == 1
    assert {n: len(r) for n, r in requests.items()} == {1: 1, 2: 1, 3: 1, 4: 1}
    assert {n: (o["status"], o["http_status"]) for n, o in outcomes.items()} == {
        1: ("succeeded", "200"),
        2: ("failed", "400"),
        3: ("succeeded", "200"),
        4: ("failed", "400"),
    }
    assert outcomes[2]["error"] == "HTTP 400: Missing required variable(s): email"
    assert outcomes[4]["error"] == (
        "HTTP 400: Missing required variable(s): email, name"
    )
    assert (outcomes[2]["attempts"], outcomes[4]["attempts"]) == ("1", "1")
    assert (outcomes[2]["session_id"], outcomes[4]["session_id"]) == ("", "")


def test_all_rows_succeeding_exits_zero(serve: Any, tmp_path: Path) -> None:
    flows = write_flows(tmp_path / "flows.json", ("acme", "signup", ["email", "name"]))
    service = serve("--flows", str(flows))
    rows = [["a@x", "Ann"], ["b@x", "Bob"]]
    input_path = write_csv(tmp_path / "in.csv", ["email", "name"], rows)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, org="acme", flow="signup")
    records = logged(service)
    outcomes = records_by_row(output)

    assert result.returncode == 0, result.stderr
    assert [r["status"] for r in records] == [200, 200]
    assert [o["status"] for o in outcomes.values()] == ["succeeded", "succeeded"]


# 6. A bad token or an unknown flow stops the run early, exit 3


def test_wrong_token_stops_the_run_early(serve: Any, tmp_path: Path) -> None:
    service = serve(env={"BATCHRUN_SERVE_TOKEN": "the-right-token"})
    input_path = contacts(tmp_path / "in.csv", 2000)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "-q")
    records = logged(service)
    reason = "HTTP 401: Unauthorized: missing or invalid token"

    assert result.returncode == 3
    assert f"batchrun: stopping: {reason}" in stderr_lines(result)
    assert f"  aborted: {reason}" in stderr_lines(result)
    assert 0 < len(records) <= 64  # at most about the 32 requests in flight
    assert {record["status"] for record in records} == {401}
    assert records_by_row(output) == {}


@pytest.mark.parametrize(
    ("org", "flow", "problem"),
    [
        ("acme", "nope", "no such flow in organisation acme"),
        ("nobody", "signup", "no such organisation nobody"),
    ],
)
def test_unknown_flow_stops_the_run_early(
    serve: Any, tmp_path: Path, org: str, flow: str, problem: str
) -> None:
    flows = write_flows(tmp_path / "flows.json", ("acme", "signup", []))
    service = serve("--flows", str(flows))
    input_path = contacts(tmp_path / "in.csv", 2000)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, org=org, flow=flow)
    records = logged(service)
    reason = f"HTTP 404: Failed to execute flow {flow}: {problem}"

    assert result.returncode == 3
    assert f"batchrun: stopping: {reason}" in stderr_lines(result)
    assert 0 < len(records) <= 64
    assert {record["status"] for record in records} == {404}


# 7. The token never appears anywhere


def assert_token_nowhere(
    token: str, root: Path, *texts: str, skip: Path | None = None
) -> None:
    for text in texts:
        assert token not in text
    files = [p for p in root.rglob("*") if p.is_file() and p != skip]
    assert files
    for path in files:
        assert token.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_token_never_appears_in_outputs_or_messages(
    serve: Any, tmp_path: Path, suffix: str
) -> None:
    flows = write_flows(tmp_path / "flows.json", (ORG, FLOW, ["first_name"]))
    service = serve("--flows", str(flows), "--fail-rate", "0.3", "--seed", "3")
    rows = [[f"n{n}" if n % 4 else "", "+1"] for n in range(20)]
    input_path = write_csv(tmp_path / "in.csv", ["first_name", "phone"], rows)
    output = tmp_path / f"out{suffix}"

    result = run_batch(
        service, input_path, output, "--max-attempts", "2", "--include-input"
    )
    records = logged(service)

    assert result.returncode == 1  # some rows failed: 400s and 500s were met
    assert {400, 500} <= {record["status"] for record in records}
    assert Path(str(output) + ".checkpoint").exists()
    assert_token_nowhere(
        TOKEN, tmp_path, result.stdout, result.stderr, service.stderr()
    )


def test_rejected_token_never_appears(serve: Any, tmp_path: Path) -> None:
    service = serve("--token", "the-right-token")
    input_path = contacts(tmp_path / "in.csv", 5)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "--verbose")
    logged(service)

    assert result.returncode == 3
    assert_token_nowhere(
        TOKEN, tmp_path, result.stdout, result.stderr, service.stderr()
    )


def test_token_file_is_used_and_never_copied(serve: Any, tmp_path: Path) -> None:
    service = serve(env={"BATCHRUN_SERVE_TOKEN": TOKEN})
    token_file = tmp_path / "secret" / "token.txt"
    token_file.parent.mkdir()
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    input_path = contacts(tmp_path / "in.csv", 10)
    output = tmp_path / "out.jsonl"

    result = run_batch(
        service, input_path, output, "--token-file", str(token_file), token=None
    )
    records = logged(service)

    assert result.returncode == 0, result.stderr
    assert [record["status"] for record in records] == [200] * 10
    assert_token_nowhere(
        TOKEN,
        tmp_path,
        result.stdout,
        result.stderr,
        service.stderr(),
        skip=token_file,
    )


@pytest.mark.parametrize("form", ["separate", "joined"])
def test_token_option_does_not_exist(serve: Any, tmp_path: Path, form: str) -> None:
    service = serve()
    input_path = contacts(tmp_path / "in.csv", 3)
    output = tmp_path / "out.csv"
    args = ["--token", TOKEN] if form == "separate" else [f"--token={TOKEN}"]

    result = run_batch(service, input_path, output, *args, token=None)

    assert result.returncode == 2
    assert "Error: No such option '--token'." in result.stderr
    assert TOKEN not in result.stderr + result.stdout
    assert logged(service) == []
    assert not output.exists()


# 8. Options from the environment


def test_options_come_from_the_environment(serve: Any, tmp_path: Path) -> None:
    service = serve("--latency", "30")
    input_path = contacts(tmp_path / "in.csv", 12)
    output = tmp_path / "out.csv"
    env = {
        "BATCHRUN_BASE_URL": service.url,
        "BATCHRUN_ORG": "env-org",
        "BATCHRUN_FLOW": "env-flow",
        "BATCHRUN_CONCURRENCY": "3",
    }

    result = cli("run", str(input_path), "-o", str(output), env=env)
    records = logged(service)

    assert result.returncode == 0, result.stderr
    assert {(r["org"], r["flow"]) for r in records} == {("env-org", "env-flow")}
    assert sorted(by_row(records, output)) == list(range(1, 13))
    assert most_in_flight(records) == 3


def most_in_flight(records: list[dict[str, Any]]) -> int:
    """The largest number of requests the service was handling at one time."""
    spans = [(r["time"], r["time"] + r["latency_ms"] / 1000) for r in records]
    return max(sum(start <= t < end for start, end in spans) for t, _ in spans)


# 9. --org and --flow are validated, and escaped as path segments


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--org", "   ", "is empty"),
        ("--flow", "\t", "is empty"),
        ("--flow", "a/b", "contains a slash"),
        ("--org", "..", "contains '..'"),
        ("--flow", "..", "contains '..'"),
        ("--org", "a b", "contains whitespace"),
    ],
)
def test_bad_org_or_flow_exits_2_before_sending(
    serve: Any, tmp_path: Path, option: str, value: str, problem: str
) -> None:
    service = serve()
    input_path = contacts(tmp_path / "in.csv", 3)
    output = tmp_path / "out.csv"
    target = {"org": ORG, "flow": FLOW, option.lstrip("-"): value}

    result = run_batch(service, input_path, output, **target)

    assert result.returncode == 2
    assert stderr_lines(result) == [
        f"batchrun: error: {option} {value!r} {problem}; give the identifier "
        "exactly as the platform shows it"
    ]
    assert logged(service) == []
    assert not output.exists()


@pytest.mark.parametrize("option", ["--org", "--flow"])
def test_empty_org_or_flow_exits_2_before_sending(
    serve: Any, tmp_path: Path, option: str
) -> None:
    service = serve()
    input_path = contacts(tmp_path / "in.csv", 3)
    output = tmp_path / "out.csv"
    target = {"org": ORG, "flow": FLOW, option.lstrip("-"): ""}

    result = run_batch(service, input_path, output, **target)

    assert result.returncode == 2
    variable = "BATCHRUN_" + option.lstrip("-").upper()
    assert stderr_lines(result) == [
        f"batchrun: error: missing {option} (or set {variable}, or use a --profile)"
    ]
    assert logged(service) == []
    assert not output.exists()


def test_org_and_flow_are_escaped_as_path_segments(serve: Any, tmp_path: Path) -> None:
    service = serve()
    input_path = contacts(tmp_path / "in.csv", 2)
    output = tmp_path / "out.csv"
    org, flow = "café%2Fü%20x", "a?b#c+d;e&f=g"

    result = run_batch(service, input_path, output, org=org, flow=flow)
    records = logged(service)

    assert result.returncode == 0, result.stderr
    assert [(r["org"], r["flow"], r["status"]) for r in records] == [
        (org, flow, 200)
    ] * 2


# 10. File-level problems: exit 2, one line, nothing sent


def file_problem(tmp_path: Path, case: str) -> tuple[Path, str]:
    """Write the input of ``case``; return it and the expected message."""
    if case == "missing":
        path = tmp_path / "missing.csv"
        return path, f"{path}: no such file; check the path"
    if case == "extension":
        path = tmp_path / "data.xyz"
        path.write_text("a,b\n1,2\n", encoding="utf-8")
        known = "csv, jsonl, ods, parquet, tsv, xls, xlsx"
        return path, (
            f"{path}: cannot tell the format from the extension '.xyz'; rename "
            f"the file or pass --format ({known})"
        )
    path = tmp_path / "in.csv"
    content = {
        "empty": b"",
        "blank-lines": b"\n  \n\n",
        "duplicates": b"a,b,a\n1,2,3\n",
        "not-utf8": b"name\ncaf\xe9\n",
    }[case]
    path.write_bytes(content)
    empty = f"{path}: the file is empty; its first line must be a header row naming "
    return path, {
        "empty": empty + "the columns",
        "blank-lines": empty + "the columns",
        "duplicates": f"{path}, line 1: the header repeats column names: 'a' "
        "(columns 1, 3); rename them so every column is unique",
        "not-utf8": f"{path}, line 2: byte 0xe9 at byte offset 8 is not valid "
        "UTF-8; pass the file's encoding, for example --encoding cp1252",
    }[case]


@pytest.mark.parametrize(
    "case",
    ["missing", "extension", "empty", "blank-lines", "duplicates", "not-utf8"],
)
def test_file_problem_exits_2_with_one_line(
    serve: Any, tmp_path: Path, case: str
) -> None:
    service = serve()
    input_path, message = file_problem(tmp_path, case)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output)

    assert result.returncode == 2
    assert stderr_lines(result) == [f"batchrun: error: {message}"]
    assert result.stdout == ""
    assert logged(service) == []
    assert not output.exists()


def late_bad_byte(path: Path, rows: int, width: int) -> Path:
    """A CSV whose only non-UTF-8 byte is in its last row, past the first MiB."""
    lines = [b"id,text\n"]
    lines += [b"%05d,%s\n" % (n, b"x" * width) for n in range(1, rows + 1)]
    lines.append(b"99999,caf\xe9\n")
    data = b"".join(lines)
    assert len(data) > CHUNK_BYTES
    path.write_bytes(data)
    return path


def test_a_bad_byte_past_the_first_mib_stops_before_any_request(
    serve: Any, tmp_path: Path
) -> None:
    # The first 1,000 rows fit in the first MiB: a reader that found the bad
    # byte only when it got there would already have sent them.
    service = serve("--latency", "10")
    input_path = late_bad_byte(tmp_path / "in.csv", rows=1100, width=994)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "-q")

    assert result.returncode == 2
    assert f"batchrun: error: {input_path}, line 1102: byte 0xe9" in result.stderr
    assert logged(service) == []
    assert not output.exists()


def test_suggested_encoding_fix_works_after_a_late_encoding_error(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    input_path = late_bad_byte(tmp_path / "in.csv", rows=600, width=2000)
    output = tmp_path / "out.csv"

    first = run_batch(service, input_path, output)
    second = run_batch(service, input_path, output, "--encoding", "cp1252")
    records = logged(service)

    assert first.returncode == 2
    assert "--encoding cp1252" in first.stderr
    assert second.returncode == 0, second.stderr
    assert len(records) == 601


# 11. Output formats and --include-input


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_typed_outputs_hold_the_same_records_as_the_log(
    serve: Any, tmp_path: Path, suffix: str
) -> None:
    flows = write_flows(tmp_path / "flows.json", (ORG, FLOW, ["phone"]))
    service = serve("--flows", str(flows))
    rows = [["Ann", "+1"], ["Bob", ""], ["Cy", "+3"]]
    input_path = write_csv(tmp_path / "in.csv", ["first_name", "phone"], rows)
    output = tmp_path / f"out{suffix}"

    result = run_batch(service, input_path, output)
    requests = by_row(logged(service), output)
    records = read_output(output)
    prefix = run_id(output)
    missing = "HTTP 400: Missing required variable(s): phone"

    assert result.returncode == 1
    assert output_fields(output) == RESULT_FIELDS
    assert [r["row"] for r in sorted(records, key=lambda r: r["row"])] == [1, 2, 3]
    for record in records:
        request = requests[record["row"]][0]
        failed = record["row"] == 2
        assert record == {
            "row": record["row"],
            "status": "failed" if failed else "succeeded",
            "http_status": 400 if failed else 200,
            "session_id": request["session_id"],
            "error": missing if failed else None,
            "attempts": 1,
            "resent": False,
            "started_at": record["started_at"],
            "latency_ms": record["latency_ms"],
            "row_id": f"{prefix}-{record['row']}",
        }
        assert isinstance(record["latency_ms"], int)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_include_input_puts_input_columns_first(
    serve: Any, tmp_path: Path, suffix: str
) -> None:
    service = serve()
    rows = [["00123", "+15550100", "vip"], ["7", "", "new"]]
    header = ["zip", "phone", "status"]
    input_path = write_csv(tmp_path / "in.csv", header, rows)
    output = tmp_path / f"out{suffix}"

    result = run_batch(service, input_path, output, "--include-input")
    outcomes = records_by_row(output)

    assert result.returncode == 0, result.stderr
    assert output_fields(output) == ["zip", "phone", "input_status", *RESULT_FIELDS]
    inputs = {
        n: (o["zip"], o["phone"], o["input_status"], o["status"])
        for n, o in outcomes.items()
    }
    assert inputs == {
        1: ("00123", "+15550100", "vip", "succeeded"),
        2: ("7", "", "new", "succeeded"),
    }


def test_include_input_from_jsonl_puts_the_row_first(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    rows = [{"id": 1, "tags": ["a", "b"]}, {"id": 2, "big": 12345678901234567890123}]
    input_path = tmp_path / "in.jsonl"
    input_path.write_text("\n".join(map(json.dumps, rows)) + "\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"

    result = run_batch(service, input_path, output, "--include-input")
    outcomes = records_by_row(output)

    assert result.returncode == 0, result.stderr
    assert output_fields(output) == ["input", *RESULT_FIELDS]
    assert {n: json.loads(o["input"]) for n, o in outcomes.items()} == {
        1: rows[0],
        2: rows[1],
    }


@pytest.mark.parametrize(
    ("header", "row", "column"),
    [
        pytest.param(
            ["key", "name"],
            ["k-1", "Ann"],
            "key",
            id="key",
        ),
        pytest.param(
            ["input", "name"],
            ["in-1", "Ann"],
            "input",
            id="input",
        ),
        pytest.param(
            ["name", "input_name"],
            ["Ann", "Annie"],
            "input_name",
            id="input-prefix",
        ),
    ],
)
def test_include_input_keeps_every_input_value(
    serve: Any, tmp_path: Path, header: list[str], row: list[str], column: str
) -> None:
    service = serve()
    input_path = write_csv(tmp_path / "in.csv", header, [row])
    output = tmp_path / "out.jsonl"

    result = run_batch(service, input_path, output, "--include-input")
    outcome = records_by_row(output)[1]

    assert result.returncode == 0, result.stderr
    assert output_fields(output)[:2] == header
    assert outcome[column] == dict(zip(header, row, strict=True))[column]


def test_include_input_never_repeats_an_output_column(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    header = ["status", "input_status"]
    input_path = write_csv(tmp_path / "in.csv", header, [["vip", "checked"]])
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "--include-input")
    fields = output_fields(output)
    with output.open(encoding="utf-8", newline="") as file:
        values = list(csv.reader(file))[1]

    assert result.returncode == 0, result.stderr
    assert len(set(fields)) == len(fields), fields
    assert {"vip", "checked"} <= set(values)


# 12. 500s are retried with backoff, and every attempt is recorded


def test_persistent_500_is_tried_max_attempts_times(serve: Any, tmp_path: Path) -> None:
    service = serve("--fail-rate", "1")
    input_path = contacts(tmp_path / "in.csv", 50)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "--max-attempts", "2")
    requests = by_row(logged(service), output)
    outcomes = records_by_row(output)

    assert result.returncode == 1
    assert sorted(requests) == list(range(1, 51))
    assert {len(r) for r in requests.values()} == {2}
    assert {r["status"] for rs in requests.values() for r in rs} == {500}
    assert {
        (o["status"], o["http_status"], o["attempts"], o["error"])
        for o in outcomes.values()
    } == {
        (
            "failed",
            "500",
            "2",
            f"HTTP 500: Failed to execute flow {FLOW} (after 2 attempts)",
        )
    }
    assert len(outcomes) == 50
    assert "50 rows read: 0 succeeded, 50 failed, 0 invalid" in result.stderr
    assert "  50 retries" in stderr_lines(result)


def test_occasional_500_is_retried_and_attempts_match_the_log(
    serve: Any, tmp_path: Path
) -> None:
    service = serve("--fail-rate", "0.3", "--seed", "1")
    input_path = contacts(tmp_path / "in.csv", 50)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "--max-attempts", "3")
    requests = by_row(logged(service), output)
    outcomes = records_by_row(output)
    total = sum(len(r) for r in requests.values())

    assert sorted(outcomes) == sorted(requests) == list(range(1, 51))
    for number, outcome in outcomes.items():
        sent = requests[number]
        statuses = [r["status"] for r in sent]
        assert int(outcome["attempts"]) == len(sent) <= 3
        assert set(statuses[:-1]) <= {500}
        assert outcome["http_status"] == str(statuses[-1])
        if outcome["status"] == "succeeded":
            assert outcome["session_id"] == sent[-1]["session_id"]
        else:
            assert statuses == [500, 500, 500]
    succeeded = sum(o["status"] == "succeeded" for o in outcomes.values())
    assert succeeded >= 40
    assert total > 50  # some rows needed a retry
    assert result.returncode == (0 if succeeded == 50 else 1)
    assert f"{total - 50} retries" in result.stderr


# 13. Help shows the defaults


def test_top_level_help_lists_the_commands() -> None:
    result = cli("--help", token=None)

    assert result.returncode == 0
    assert re.search(r"^\s+run\s", result.stdout, re.M)
    assert re.search(r"^\s+serve\s", result.stdout, re.M)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_run_help_shows_the_defaults(flag: str) -> None:
    result = cli("run", flag, token=None)
    text = " ".join(result.stdout.split())

    assert result.returncode == 0
    assert "--concurrency INTEGER Requests in flight at most." in text
    assert "BATCHRUN_CONCURRENCY; default: 32]" in text
    assert "BATCHRUN_TIMEOUT; default: 300.0]" in text


def test_installed_command_shows_the_same_help() -> None:
    command = Path(sys.executable).parent / "batchrun"
    module = cli("run", "--help", token=None)

    installed = subprocess.run(
        [str(command), "run", "--help"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )

    assert installed.returncode == 0
    assert installed.stdout.replace("batchrun run", "python -m batchrun run", 1) == (
        module.stdout
    )
