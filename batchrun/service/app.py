"""The local stand-in flow service: the contract, injected faults, a request log.

A request is judged in a fixed order, so a test can predict every answer:

1. a missing or wrong bearer token: 401;
2. an organisation or flow not in the flows file (when one is given): 404;
3. more requests than ``--max-rate`` in the last second: 429, Retry-After 1;
4. a body that is not a JSON object, or lacks a required variable: 400;
5. the random faults, at most one per request: 500, 429 or a dropped
   connection;
6. otherwise the flow "runs": 200 with a fresh session id.

Answers 1 to 4 and the injected 429 come at once. An execution (200, the
injected 500, a drop) first waits the configured latency, plus the slow
extra for the requests picked as slow, as a real flow would.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from ..config import EXECUTE_PATH, Secret
from ..errors import InputError, OutputError, UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_RETRY_AFTER = 1
DEFAULT_SLOW_MS = 5000.0
TOKEN_ENV = "BATCHRUN_SERVE_TOKEN"
LOG_FLUSH_INTERVAL = 0.2
LOG_BUFFER_LINES = 10_000
SHUTDOWN_GRACE = 2.0
RATE_WINDOW = 1.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

FlowTable = Mapping[tuple[str, str], tuple[str, ...]]

_JSON = "application/json"
_INVALID = object()  # the parsed body when it is not JSON at all


@dataclass(frozen=True, slots=True)
class Latency:
    """How long an execution takes: uniform between two bounds, in ms."""

    low_ms: float = 0.0
    high_ms: float = 0.0

    def draw(self, rng: random.Random) -> float:
        """One execution's latency in seconds."""
        if self.high_ms == self.low_ms:
            return self.low_ms / 1000
        return rng.uniform(self.low_ms, self.high_ms) / 1000


@dataclass(frozen=True, slots=True)
class Faults:
    """Probabilities of the injected faults; fail, throttle and drop exclude
    each other, so their sum is at most 1."""

    fail_rate: float = 0.0
    throttle_rate: float = 0.0
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_ms: float = DEFAULT_SLOW_MS
    retry_after: int = DEFAULT_RETRY_AFTER

    def __post_init__(self) -> None:
        rates = {
            "--fail-rate": self.fail_rate,
            "--throttle-rate": self.throttle_rate,
            "--drop-rate": self.drop_rate,
            "--slow-rate": self.slow_rate,
        }
        for option, rate in rates.items():
            if not 0 <= rate <= 1:
                raise UsageError(f"{option} must be between 0 and 1, got {rate:g}")
        if self.fail_rate + self.throttle_rate + self.drop_rate > 1:
            raise UsageError(
                "--fail-rate, --throttle-rate and --drop-rate add up to more than 1; "
                "lower them so that at most every request gets one fault"
            )
        if self.slow_ms < 0 or self.retry_after < 0:
            raise UsageError("--slow-ms and --retry-after must not be negative")


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Everything one `batchrun serve` needs."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: Secret | None = None
    flows: FlowTable | None = None
    latency: Latency = field(default_factory=Latency)
    faults: Faults = field(default_factory=Faults)
    max_rate: int | None = None
    seed: int | None = None
    log_path: Path | None = None


def parse_latency(text: str) -> Latency:
    """Parse "250" or "100-900" (milliseconds); raise UsageError otherwise."""
    low, dash, high = text.strip().partition("-")
    try:
        bounds = (float(low), float(high) if dash else float(low))
    except ValueError:
        bounds = (-1.0, -1.0)
    if not 0 <= bounds[0] <= bounds[1] < float("inf"):
        raise UsageError(
            f"--latency {text!r} is not a latency; give milliseconds, fixed or as a "
            "range, for example --latency 250 or --latency 100-900"
        )
    return Latency(*bounds)


def load_flows(path: Path) -> dict[tuple[str, str], tuple[str, ...]]:
    """Read a flows file: {"flows": [{"org", "flow", "required": [...]}, ...]}."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--flows {path}: cannot read it ({exc.strerror})") from exc
    try:
        document = json.loads(text)
    except ValueError as exc:  # includes a UnicodeDecodeError
        raise InputError(f"--flows {path} is not valid JSON ({exc})") from exc

    entries = document.get("flows") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise InputError(f'--flows {path}: expected an object with a "flows" list')

    table: dict[tuple[str, str], tuple[str, ...]] = {}
    for number, entry in enumerate(entries, start=1):
        table[_flow_key(path, number, entry)] = _required(path, number, entry)
    return table


def _flow_key(path: Path, number: int, entry: object) -> tuple[str, str]:
    if isinstance(entry, dict):
        org, flow = entry.get("org"), entry.get("flow")
        if isinstance(org, str) and org and isinstance(flow, str) and flow:
            return org, flow
    raise InputError(
        f'--flows {path}: flow number {number} needs non-empty "org" and "flow" strings'
    )


def _required(path: Path, number: int, entry: dict[str, Any]) -> tuple[str, ...]:
    names = entry.get("required", [])
    if isinstance(names, list) and all(isinstance(n, str) and n for n in names):
        return tuple(names)
    raise InputError(
        f'--flows {path}: "required" of flow number {number} must be a list of '
        "variable names"
    )


class RequestLog:
    """JSON lines, one per request, buffered and written at least every 0.2 s."""

    def __init__(self, path: Path) -> None:
        try:
            self._file: TextIO = path.open("w", encoding="utf-8")
        except OSError as exc:
            raise OutputError(
                f"--log {path}: cannot write it ({exc.strerror}); check the folder "
                "exists and is writable"
            ) from exc
        self._pending: list[str] = []

    def add(self, record: dict[str, Any]) -> None:
        """Queue one record; write now if the buffer is full."""
        self._pending.append(json.dumps(record, ensure_ascii=False))
        if len(self._pending) >= LOG_BUFFER_LINES:
            self.flush()

    def flush(self) -> None:
        """Write and flush every queued record."""
        if self._pending:
            self._pending.append("")
            self._file.write("\n".join(self._pending))
            self._pending.clear()
            self._file.flush()

    def close(self) -> None:
        """Flush and close the file."""
        self.flush()
        self._file.close()

    async def keep_flushing(self) -> None:
        """Flush every LOG_FLUSH_INTERVAL seconds until cancelled."""
        while True:
            await asyncio.sleep(LOG_FLUSH_INTERVAL)
            self.flush()


@dataclass(slots=True)
class Answer:
    """What the service decided to do with one request."""

    status: int
    payload: dict[str, str] | None = None
    delay: float = 0.0
    retry_after: int | None = None
    session_id: str | None = None


class FlowService:
    """The request handlers and their state: random source, rate window, log."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.received = 0
        self._rng = random.Random(config.seed)
        self._window: collections.deque[float] = collections.deque()
        self._log = RequestLog(config.log_path) if config.log_path else None

    def application(self) -> web.Application:
        """The aiohttp application serving the contract and /healthz."""
        app = web.Application()
        app.router.add_post(EXECUTE_PATH, self.execute)
        app.router.add_get("/healthz", self.healthz)
        app.cleanup_ctx.append(self._log_lifetime)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        """Readiness: 200 "ok", no token needed."""
        return web.Response(text="ok")

    async def execute(self, request: web.Request) -> web.StreamResponse:
        """Answer one execute request, as the contract says."""
        received = time.time()
        started = time.monotonic()
        self.received += 1
        org, flow = request.match_info["org"], request.match_info["flow"]
        variables = _parse_body(await request.read())

        answer = self._decide(request, org, flow, variables)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if self._log is not None:
            self._log.add(
                {
                    "time": received,
                    "org": org,
                    "flow": flow,
                    "variables": None if variables is _INVALID else variables,
                    "status": answer.status,
                    "session_id": answer.session_id,
                    "idempotency_key": request.headers.get("Idempotency-Key"),
                    "latency_ms": round((time.monotonic() - started) * 1000, 3),
                }
            )
        if answer.status == 0:
            return _drop(request)
        return _respond(answer)

    def _decide(
        self, request: web.Request, org: str, flow: str, variables: object
    ) -> Answer:
        if not self._authorised(request.headers.get("Authorization", "")):
            return Answer(401, {"error": "Unauthorized: missing or invalid token"})
        unknown = self._unknown(org, flow)
        if unknown:
            return Answer(404, {"error": f"Failed to execute flow {flow}: {unknown}"})
        if self._over_rate():
            return Answer(429, {"error": "Too many requests"}, retry_after=1)
        if not isinstance(variables, dict):
            return Answer(400, {"error": "The body must be a JSON object of variables"})
        missing = self._missing(org, flow, variables)
        if missing:
            message = f"Missing required variable(s): {', '.join(missing)}"
            return Answer(400, {"error": message})
        return self._execution(flow)

    def _execution(self, flow: str) -> Answer:
        faults = self.config.faults
        delay = self.config.latency.draw(self._rng)
        if faults.slow_rate and self._rng.random() < faults.slow_rate:
            delay += faults.slow_ms / 1000

        # One draw picks at most one fault, so each rate is the share of
        # executions that get that fault.
        draw = self._rng.random()
        if draw < faults.fail_rate:
            return Answer(500, {"error": f"Failed to execute flow {flow}"}, delay)
        draw -= faults.fail_rate
        if draw < faults.throttle_rate:
            retry = faults.retry_after
            return Answer(429, {"error": "Too many requests"}, retry_after=retry)
        if draw - faults.throttle_rate < faults.drop_rate:
            return Answer(0, delay=delay)

        session_id = str(uuid.uuid4())
        payload = {"sessionId": session_id, "result": "Execution completed"}
        return Answer(200, payload, delay, session_id=session_id)

    def _authorised(self, header: str) -> bool:
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return False
        token = self.config.token
        if token is None:
            return True
        # Header text may carry undecodable bytes as surrogates; keep them.
        sent = credential.encode("utf-8", "surrogateescape")
        return hmac.compare_digest(sent, token.reveal().encode())

    def _unknown(self, org: str, flow: str) -> str | None:
        flows = self.config.flows
        if flows is None or (org, flow) in flows:
            return None
        if any(known_org == org for known_org, _ in flows):
            return f"no such flow in organisation {org}"
        return f"no such organisation {org}"

    def _missing(self, org: str, flow: str, variables: dict[str, Any]) -> list[str]:
        flows = self.config.flows
        required = flows[(org, flow)] if flows is not None else ()
        return [name for name in required if variables.get(name) in (None, "")]

    def _over_rate(self) -> bool:
        # The window holds the arrival times of the requests let through in
        # the last RATE_WINDOW seconds, oldest first; it never exceeds max_rate.
        limit = self.config.max_rate
        if limit is None:
            return False
        now = time.monotonic()
        window = self._window
        while window and now - window[0] >= RATE_WINDOW:
            window.popleft()
        if len(window) >= limit:
            return True
        window.append(now)
        return False

    async def _log_lifetime(self, app: web.Application) -> AsyncIterator[None]:
        if self._log is None:
            yield
            return
        flusher = asyncio.create_task(self._log.keep_flushing())
        try:
            yield
        finally:
            flusher.cancel()
            self._log.close()


def _parse_body(raw: bytes) -> object:
    """The JSON body, {} when empty, or _INVALID; NaN and Infinity are invalid."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        return _INVALID


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _respond(answer: Answer) -> web.Response:
    headers = None
    if answer.retry_after is not None:
        headers = {"Retry-After": str(answer.retry_after)}
    body = json.dumps(answer.payload).encode()
    return web.Response(
        status=answer.status, body=body, content_type=_JSON, headers=headers
    )


def _drop(request: web.Request) -> web.StreamResponse:
    """Abort the connection: the client sees it close with no answer at all."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=500)  # never sent: the transport is gone


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable only from this machine."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def display_url(host: str, port: int) -> str:
    """The base URL of a listening address, with IPv6 hosts bracketed."""
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def serve(
    config: ServiceConfig,
    on_ready: Callable[[str], None],
    stop: asyncio.Event,
) -> int:
    """Serve until ``stop`` is set; return the number of requests received.

    ``on_ready`` gets the base URL, with the real port, once the socket listens.
    """
    service = FlowService(config)
    runner = web.AppRunner(
        service.application(),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_GRACE,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {config.host} port {config.port} "
                f"({exc.strerror or exc}); choose another --port, or --port 0 for a "
                "free one"
            ) from exc
        host, port = runner.addresses[0][:2]
        on_ready(display_url(host, port))
        await stop.wait()
    finally:
        # Stop accepting, let requests in flight finish for SHUTDOWN_GRACE
        # seconds, cancel the rest, then flush and close the log.
        await runner.cleanup()
    return service.received


def run(config: ServiceConfig, on_ready: Callable[[str], None]) -> int:
    """Serve until SIGINT or SIGTERM; return the number of requests received.

    Uses uvloop when it is installed, for a higher request rate.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_serve_until_signal(config, on_ready))
    return int(uvloop.run(_serve_until_signal(config, on_ready)))


async def _serve_until_signal(
    config: ServiceConfig, on_ready: Callable[[str], None]
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await serve(config, on_ready, stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
