"""Shared test helpers: the real `batchrun serve` in a subprocess, and a client.

``start_service(tmp_path, *args)`` starts ``python -m batchrun.service`` on a
free loopback port with a request log in ``tmp_path`` and returns a
:class:`Service` once it listens; use it as a context manager, or take the
``serve`` fixture, which stops every service it started. ``post`` sends one
execute request with the standard library, ignoring any proxy settings.
"""

from __future__ import annotations

import csv
import json
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
LISTENING = "batchrun serve: listening on "
EXECUTE_PATH = "/cgw/process/v1/orgs/{org}/flows/{flow}/execute"
TOKEN_ENV = "BATCHRUN_SERVE_TOKEN"
MAX_LOGS = 1000

# Never let a proxy from the environment see a test request.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Service:
    """A running `batchrun serve` subprocess."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        url: str,
        log_path: Path | None,
        stderr_path: Path,
    ) -> None:
        self.process = process
        self.url = url
        self.log_path = log_path
        self.stderr_path = stderr_path
        self.returncode: int | None = None
        self.stdout_rest = ""  # what it printed after the listening line

    def execute_url(self, org: str = "demo-org", flow: str = "welcome-message") -> str:
        """The execute URL of one flow on this service."""
        return self.url + EXECUTE_PATH.format(org=org, flow=flow)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the service to stop, wait for it, and return its exit code.

        A service still running after STOP_TIMEOUT seconds is killed, and the
        exit code is then the negative signal number.
        """
        if self.returncode is None:
            if self.process.poll() is None:
                self.process.send_signal(signum)
            try:
                self.returncode = self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.returncode = self.process.wait(timeout=STOP_TIMEOUT)
            finally:
                if self.process.stdout is not None:
                    self.stdout_rest = self.process.stdout.read().decode()
                    self.process.stdout.close()
        return self.returncode

    def records(self) -> list[dict[str, Any]]:
        """The request log's records written so far."""
        assert self.log_path is not None, "this service was started with no --log"
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    def stderr(self) -> str:
        """What the service wrote to stderr so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> Service:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_service(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> Service:
    """Start `python -m batchrun.service --port 0 ARGS` and wait until it listens.

    A request log goes to a fresh file in ``tmp_path`` unless ``args`` has
    ``--log``; ``BATCHRUN_SERVE_TOKEN`` is taken from ``env`` only. Raises
    RuntimeError, after killing the process, if it does not listen within
    READY_TIMEOUT seconds.
    """
    log_path: Path | None = None
    if "--log" not in args:
        log_path = _fresh_path(tmp_path, "service-log", ".jsonl")
        args = (*args, "--log", str(log_path))
    else:
        log_path = Path(args[args.index("--log") + 1])
    stderr_path = _fresh_path(tmp_path, "service-stderr", ".txt")

    environment = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    environment.update(env or {})
    command = [sys.executable, "-m", "batchrun.service", "--port", "0", *args]
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        line = _read_line(process, READY_TIMEOUT)
        if not line.startswith(LISTENING):
            raise RuntimeError(
                f"batchrun serve did not start: stdout {line!r}, "
                f"stderr {stderr_path.read_text(errors='replace')!r}"
            )
    except BaseException:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)
        assert process.stdout is not None
        process.stdout.close()
        raise
    return Service(process, line[len(LISTENING) :], log_path, stderr_path)


def _fresh_path(directory: Path, stem: str, suffix: str) -> Path:
    for number in range(MAX_LOGS):
        path = directory / f"{stem}-{number}{suffix}"
        if not path.exists():
            return path
    raise RuntimeError(f"more than {MAX_LOGS} {stem} files in {directory}")


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line of stdout; '' if the process exits or time runs out."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                break
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            data += chunk
    return data.partition(b"\n")[0].decode("utf-8", "replace")


@dataclass
class Reply:
    """One HTTP answer."""

    status: int
    headers: Message
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.body)


def post(
    url: str,
    body: bytes | dict[str, Any] | None = None,
    *,
    token: str | None = "test-token",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """POST one request and return the answer, whatever its status.

    A dropped connection raises ConnectionError, as urllib does.
    """
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data or b"", method="POST")
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, error.headers, error.read())


def get(url: str, timeout: float = 10.0) -> Reply:
    """GET one URL and return the answer, whatever its status."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, error.headers, error.read())


def logged(service: Service) -> list[dict[str, Any]]:
    """Stop the service (which flushes its log) and return every request."""
    service.stop()
    return service.records()


def run_id(output: Path) -> str:
    """The run id the checkpoint beside ``output`` holds."""
    checkpoint = Path(str(output) + ".checkpoint")
    header = checkpoint.read_text(encoding="utf-8").splitlines()[0]
    return str(json.loads(header)["run_id"])


def read_output(path: Path) -> list[dict[str, Any]]:
    """The records of a .csv, .jsonl, .parquet or .xlsx output, in file order."""
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as file:
            return list(csv.DictReader(file))
    if path.suffix == ".jsonl":
        # split on "\n" only: a value may hold U+2028, which splitlines() cuts
        lines = path.read_text(encoding="utf-8").split("\n")
        return [json.loads(line) for line in lines if line]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_table(path).to_pylist())
    import openpyxl

    workbook = openpyxl.load_workbook(path)
    rows = list(workbook.worksheets[0].iter_rows(values_only=True))
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """A function like start_service(tmp_path, *args); stops all at teardown."""
    started: list[Service] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Service:
        service = start_service(tmp_path, *args, env=env)
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.stop()
