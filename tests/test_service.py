"""The local stand-in service, run for real as a subprocess on loopback."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import aiohttp
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import REPO, Reply, get, post, start_service

from batchrun.errors import UsageError
from batchrun.service import Faults, Latency
from batchrun.service.app import is_loopback, parse_latency
from batchrun.service.command import serve as serve_command

FLOWS = str(REPO / "sample_data" / "flows.json")
SAMPLES = REPO / "sample_data"
ADA = {"first_name": "Ada", "phone": "+15550100123", "plan": "gold"}


def statuses(replies: list[Reply]) -> list[int]:
    return [reply.status for reply in replies]


# Starting and stopping


def test_start_prints_one_listening_line(tmp_path: Path) -> None:
    with start_service(tmp_path) as service:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", service.url)
        reply = get(service.url + "/healthz")

    assert (reply.status, reply.body) == (200, b"ok")
    assert service.returncode == 0
    assert service.stdout_rest == ""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_on_signal_flushes_log_and_exits_zero(serve, signum: int) -> None:
    service = serve()
    replies = [post(service.execute_url(), {"n": str(n)}) for n in range(25)]

    # Stopped at once: the records reach the file by the shutdown flush, not
    # by the periodic one.
    code = service.stop(signum)

    assert code == 0
    assert statuses(replies) == [200] * 25
    assert [r["variables"] for r in service.records()] == [
        {"n": str(n)} for n in range(25)
    ]
    assert "stopped after 25 request(s)" in service.stderr()


def test_stop_lets_a_request_in_flight_finish(serve) -> None:
    service = serve("--latency", "1500")
    replies: list[Reply] = []
    sender = threading.Thread(
        target=lambda: replies.append(post(service.execute_url(), ADA))
    )

    sender.start()
    time.sleep(0.3)  # let the request arrive; it then takes 1.5 s to answer
    code = service.stop()
    sender.join(timeout=10)

    assert code == 0
    assert statuses(replies) == [200]
    assert [r["status"] for r in service.records()] == [200]


def test_log_is_flushed_while_running(serve) -> None:
    service = serve()
    post(service.execute_url(), ADA)

    deadline = time.monotonic() + 2.0
    while not service.records() and time.monotonic() < deadline:
        time.sleep(0.05)

    assert len(service.records()) == 1


# The contract


def test_success_returns_session_id_and_logs_the_request(serve) -> None:
    service = serve("--flows", FLOWS)
    before = time.time()

    reply = post(service.execute_url(), ADA, headers={"Idempotency-Key": "row-7-a1"})
    service.stop()

    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert body["result"] == "Execution completed"
    assert uuid.UUID(body["sessionId"]).version == 4
    (record,) = service.records()
    assert set(record) == {
        "time",
        "org",
        "flow",
        "variables",
        "status",
        "session_id",
        "idempotency_key",
        "latency_ms",
    }
    assert before <= record["time"] <= time.time()
    assert record["org"] == "demo-org"
    assert record["flow"] == "welcome-message"
    assert record["variables"] == ADA
    assert record["status"] == 200
    assert record["session_id"] == body["sessionId"]
    assert record["idempotency_key"] == "row-7-a1"
    assert 0 <= record["latency_ms"] < 1000


def test_variables_are_logged_exactly(serve) -> None:
    service = serve()
    variables = {
        "name": "Zoë O'Brien, Jr.",
        "zip": "02134",
        "count": 3,
        "ratio": 0.5,
        "empty": "",
        "none": None,
        "nested": {"a": [1, "2"]},
    }

    post(service.execute_url(), variables)
    service.stop()

    assert service.records()[0]["variables"] == variables
    assert "Zoë" in service.log_path.read_text(encoding="utf-8")


def test_path_segments_are_logged_decoded(serve) -> None:
    service = serve()

    reply = post(service.execute_url("my%20org", "flow%C3%A9"), {})
    service.stop()

    assert reply.status == 200
    record = service.records()[0]
    assert (record["org"], record["flow"]) == ("my org", "flowé")


def test_missing_token_is_401(serve) -> None:
    service = serve()

    reply = post(service.execute_url(), ADA, token=None)
    service.stop()

    assert reply.status == 401
    assert reply.json() == {"error": "Unauthorized: missing or invalid token"}
    assert service.records()[0]["status"] == 401


@pytest.mark.parametrize("header", ["Basic dXNlcjpwdw==", "Bearer", "Bearer   ", "x"])
def test_malformed_authorization_is_401(serve, header: str) -> None:
    service = serve()

    reply = post(
        service.execute_url(), ADA, token=None, headers={"Authorization": header}
    )

    assert reply.status == 401


def test_any_bearer_token_is_accepted_when_none_is_configured(serve) -> None:
    service = serve()

    reply = post(service.execute_url(), ADA, token="anything-at-all")

    assert reply.status == 200


def test_configured_token_must_match_exactly(serve) -> None:
    service = serve("--token", "right-token")

    replies = [
        post(service.execute_url(), ADA, token=token)
        for token in ("right-token", "wrong-token", "right-token2", "Right-token")
    ]

    assert statuses(replies) == [200, 401, 401, 401]


def test_token_with_undecodable_bytes_is_401(serve) -> None:
    service = serve("--token", "right-token")
    request = (
        b"POST /cgw/process/v1/orgs/o/flows/f/execute HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    host, port = service.url.removeprefix("http://").split(":")

    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        answer = connection.makefile("rb").readline()

    assert answer.startswith(b"HTTP/1.1 401 ")


def test_token_is_read_from_the_environment(serve) -> None:
    service = serve(env={"BATCHRUN_SERVE_TOKEN": "env-token"})

    replies = [post(service.execute_url(), ADA, token=t) for t in ("env-token", "x")]

    assert statuses(replies) == [200, 401]


def test_tokens_never_reach_the_log_or_output(serve) -> None:
    secret, wrong = "s3cret-Token-value", "wr0ng-Token-value"
    service = serve("--token", secret)

    post(service.execute_url(), ADA, token=secret)
    post(service.execute_url(), ADA, token=wrong)
    service.stop()

    written = service.log_path.read_text(encoding="utf-8") + service.stderr()
    assert len(service.records()) == 2
    assert secret not in written and wrong not in written
    assert "Bearer" not in written and "Authorization" not in written


def test_unknown_flow_is_404(serve) -> None:
    service = serve("--flows", FLOWS)

    reply = post(service.execute_url("demo-org", "no-such-flow"), ADA)

    assert reply.status == 404
    assert reply.json() == {
        "error": "Failed to execute flow no-such-flow: no such flow in organisation "
        "demo-org"
    }


def test_unknown_org_is_404(serve) -> None:
    service = serve("--flows", FLOWS)

    reply = post(service.execute_url("other-org", "welcome-message"), ADA)

    assert reply.status == 404
    assert reply.json() == {
        "error": "Failed to execute flow welcome-message: no such organisation "
        "other-org"
    }


def test_token_is_checked_before_the_flow(serve) -> None:
    service = serve("--flows", FLOWS, "--token", "t")

    reply = post(service.execute_url("other-org", "x"), ADA, token="bad")

    assert reply.status == 401


def test_any_flow_exists_without_a_flows_file(serve) -> None:
    service = serve()

    reply = post(service.execute_url("some-org", "some-flow"), {})

    assert reply.status == 200


def test_empty_body_means_no_variables(serve) -> None:
    service = serve()

    reply = post(service.execute_url(), None)
    service.stop()

    assert reply.status == 200
    assert service.records()[0]["variables"] == {}


@pytest.mark.parametrize(
    ("body", "logged"),
    [
        (b"[1, 2]", [1, 2]),
        (b'"text"', "text"),
        (b"not json", None),
        (b'{"a": NaN}', None),
        (b'{"a": "\xff"}', None),
        (b'{"a": 1', None),
    ],
)
def test_body_that_is_not_a_json_object_is_400(serve, body: bytes, logged) -> None:
    service = serve()

    reply = post(service.execute_url(), body)
    service.stop()

    assert reply.status == 400
    assert reply.json() == {"error": "The body must be a JSON object of variables"}
    assert service.records()[0]["variables"] == logged


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"first_name": "Ada"}, "Missing required variable(s): phone"),
        ({"first_name": "Ada", "phone": None}, "Missing required variable(s): phone"),
        ({"first_name": "Ada", "phone": ""}, "Missing required variable(s): phone"),
        ({"plan": "pro"}, "Missing required variable(s): first_name, phone"),
        ({"first_name": "", "phone": "+1"}, "Missing required variable(s): first_name"),
    ],
)
def test_missing_required_variable_is_400(serve, variables, message: str) -> None:
    service = serve("--flows", FLOWS)

    reply = post(service.execute_url(), variables)

    assert reply.status == 400
    assert reply.json() == {"error": message}


def test_flow_without_required_variables_accepts_empty_body(serve) -> None:
    service = serve("--flows", FLOWS)

    reply = post(service.execute_url("demo-org", "satisfaction-survey"), None)

    assert reply.status == 200


def test_other_methods_and_paths_are_refused(serve) -> None:
    service = serve()

    assert get(service.execute_url()).status == 405
    assert post(service.url + "/cgw/process/v1/orgs/o/flows/f", {}).status == 404
    assert get(service.url + "/").status == 404


# Latency and faults


def test_latency_delays_the_answer(serve) -> None:
    service = serve("--latency", "300")

    started = time.monotonic()
    reply = post(service.execute_url(), ADA)
    elapsed = time.monotonic() - started
    service.stop()

    # The event loop's timers may fire a fraction of a millisecond early.
    assert reply.status == 200
    assert elapsed >= 0.299
    assert service.records()[0]["latency_ms"] >= 299


def test_latency_range_is_respected(serve) -> None:
    service = serve("--latency", "50-150", "--seed", "3")

    for _ in range(10):
        post(service.execute_url(), ADA)
    service.stop()

    latencies = [r["latency_ms"] for r in service.records()]
    assert len(latencies) == 10
    assert all(49 <= ms < 1000 for ms in latencies)
    assert max(latencies) - min(latencies) > 5


def test_latency_does_not_delay_refusals(serve) -> None:
    service = serve("--latency", "5000", "--flows", FLOWS)

    started = time.monotonic()
    replies = [
        post(service.execute_url(), ADA, token=None),
        post(service.execute_url("demo-org", "nope"), ADA),
        post(service.execute_url(), {"first_name": "Ada"}),
    ]

    assert statuses(replies) == [401, 404, 400]
    assert time.monotonic() - started < 4


def test_many_slow_requests_run_concurrently(serve) -> None:
    service = serve("--latency", "500")
    count = 200

    async def send_all() -> list[int]:
        headers = {"Authorization": "Bearer t"}
        connector = aiohttp.TCPConnector(limit=count)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(n: int) -> int:
                url = service.execute_url()
                async with session.post(url, json={"n": n}, headers=headers) as r:
                    return r.status

            return await asyncio.wait_for(
                asyncio.gather(*(one(n) for n in range(count))), timeout=30
            )

    started = time.monotonic()
    codes = asyncio.run(send_all())
    elapsed = time.monotonic() - started

    assert codes == [200] * count
    assert elapsed < 10  # one after another it would take 100 s


def test_fail_rate_one_answers_500(serve) -> None:
    service = serve("--fail-rate", "1")

    reply = post(service.execute_url(), ADA)
    service.stop()

    assert reply.status == 500
    assert reply.json() == {"error": "Failed to execute flow welcome-message"}
    assert service.records()[0]["session_id"] is None


def test_throttle_rate_one_answers_429_with_retry_after(serve) -> None:
    service = serve("--throttle-rate", "1", "--retry-after", "7", "--latency", "5000")

    started = time.monotonic()
    reply = post(service.execute_url(), ADA)

    assert reply.status == 429
    assert reply.headers["Retry-After"] == "7"
    assert reply.json() == {"error": "Too many requests"}
    assert time.monotonic() - started < 4


def test_retry_after_defaults_to_one_second(serve) -> None:
    service = serve("--throttle-rate", "1")

    reply = post(service.execute_url(), ADA)

    assert reply.headers["Retry-After"] == "1"


def test_drop_rate_one_closes_the_connection(serve) -> None:
    service = serve("--drop-rate", "1")

    async def send() -> None:
        headers = {"Authorization": "Bearer t"}
        async with aiohttp.ClientSession() as session:
            async with session.post(
                service.execute_url(), json=ADA, headers=headers
            ) as response:
                await response.read()

    with pytest.raises(aiohttp.ServerDisconnectedError):
        asyncio.run(asyncio.wait_for(send(), timeout=10))
    with pytest.raises(ConnectionError):
        post(service.execute_url(), ADA)
    service.stop()

    records = service.records()
    assert [(r["status"], r["session_id"]) for r in records] == [(0, None)] * 2
    assert records[0]["variables"] == ADA


def test_slow_rate_one_adds_the_slow_delay(serve) -> None:
    service = serve("--slow-rate", "1", "--slow-ms", "300")

    started = time.monotonic()
    reply = post(service.execute_url(), ADA)

    assert reply.status == 200
    assert time.monotonic() - started >= 0.299


def test_faults_are_decided_after_the_checks(serve) -> None:
    service = serve("--fail-rate", "1", "--flows", FLOWS)

    replies = [
        post(service.execute_url(), ADA, token=None),
        post(service.execute_url("demo-org", "nope"), ADA),
        post(service.execute_url(), {"first_name": "Ada"}),
        post(service.execute_url(), ADA),
    ]

    assert statuses(replies) == [401, 404, 400, 500]


def test_same_seed_gives_same_faults(serve) -> None:
    args = ("--seed", "7", "--fail-rate", "0.3", "--throttle-rate", "0.3")
    runs = []
    for _ in range(2):
        service = serve(*args)
        runs.append(statuses([post(service.execute_url(), ADA) for _ in range(30)]))
        service.stop()

    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 429, 500}


def test_max_rate_answers_429_beyond_the_window(serve) -> None:
    service = serve("--max-rate", "3")

    replies = [post(service.execute_url(), ADA) for _ in range(5)]

    assert statuses(replies) == [200, 200, 200, 429, 429]
    assert replies[3].headers["Retry-After"] == "1"


# Command-line options


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--latency", "fast"],
            "Error: --latency 'fast' is not a latency; give milliseconds, fixed or "
            "as a range, for example --latency 250 or --latency 100-900\n",
        ),
        (
            ["--latency", "900-100"],
            "Error: --latency '900-100' is not a latency; give milliseconds, fixed "
            "or as a range, for example --latency 250 or --latency 100-900\n",
        ),
        (
            ["--fail-rate", "0.6", "--drop-rate", "0.6"],
            "Error: --fail-rate, --throttle-rate and --drop-rate add up to more than "
            "1; lower them so that at most every request gets one fault\n",
        ),
        (
            ["--token", " "],
            "Error: --token is empty; give a token, or omit it (and unset "
            "BATCHRUN_SERVE_TOKEN) to accept any bearer token\n",
        ),
    ],
)
def test_bad_option_exits_2_with_a_message(args: list[str], message: str) -> None:
    result = CliRunner().invoke(serve_command, args)

    assert result.exit_code == 2
    assert result.stderr == message


def test_rate_out_of_range_is_refused_by_click() -> None:
    result = CliRunner().invoke(serve_command, ["--fail-rate", "1.5"])

    assert result.exit_code == 2
    assert "--fail-rate" in result.stderr


def test_bad_flows_file_exits_2(tmp_path: Path) -> None:
    flows = tmp_path / "flows.json"
    flows.write_text('{"flows": [{"org": "o"}]}', encoding="utf-8")

    result = CliRunner().invoke(serve_command, ["--flows", str(flows)])

    assert result.exit_code == 2
    assert result.stderr == (
        f'Error: --flows {flows}: flow number 1 needs non-empty "org" and "flow" '
        "strings\n"
    )


def test_missing_flows_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"

    result = CliRunner().invoke(serve_command, ["--flows", str(missing)])

    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: --flows {missing}: cannot read it (No such file or directory)\n"
    )


def test_unwritable_log_exits_3(tmp_path: Path) -> None:
    log = tmp_path / "no-such-folder" / "log.jsonl"

    result = CliRunner().invoke(serve_command, ["--port", "0", "--log", str(log)])

    assert result.exit_code == 3
    assert result.stderr == (
        f"Error: --log {log}: cannot write it (No such file or directory); check "
        "the folder exists and is writable\n"
    )


def test_port_in_use_exits_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = CliRunner().invoke(serve_command, ["--port", str(port)])

    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: cannot listen on 127.0.0.1 port {port} (")
    assert result.stderr.endswith("choose another --port, or --port 0 for a free one\n")


def test_parse_latency_accepts_fixed_and_range() -> None:
    assert parse_latency("250") == Latency(250, 250)
    assert parse_latency(" 100-900 ") == Latency(100, 900)
    assert parse_latency("0") == Latency(0, 0)


@pytest.mark.parametrize("text", ["", "-5", "1-2-3", "nan", "inf", "5-"])
def test_parse_latency_refuses_nonsense(text: str) -> None:
    with pytest.raises(UsageError, match="--latency"):
        parse_latency(text)


def test_faults_refuse_a_rate_above_one() -> None:
    with pytest.raises(UsageError, match="--slow-rate must be between 0 and 1"):
        Faults(slow_rate=2)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("0.0.0.0", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# Sample data


def test_sample_files_equal_the_generator_output(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(SAMPLES / "make_samples.py"), "--out", str(tmp_path)],
        check=True,
        timeout=60,
    )

    for name in ("contacts.csv", "contacts.jsonl"):
        assert (SAMPLES / name).read_bytes() == (tmp_path / name).read_bytes(), name
    committed = pq.read_table(SAMPLES / "contacts.parquet")
    assert committed.equals(pq.read_table(tmp_path / "contacts.parquet"))


def test_sample_files_hold_the_same_rows_as_text() -> None:
    with (SAMPLES / "contacts.csv").open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    lines = (SAMPLES / "contacts.jsonl").read_text(encoding="utf-8").splitlines()
    parquet = pq.read_table(SAMPLES / "contacts.parquet").to_pylist()

    assert len(rows) == 300
    assert [json.loads(line) for line in lines] == rows
    assert parquet == rows
    lacking = [r for r in rows if not r["first_name"] or not r["phone"]]
    assert len(lacking) == 5
    assert any(r["zip"].startswith("0") for r in rows)
    assert any("," in value for r in rows for value in r.values())
