"""The flow client against a tiny aiohttp gateway on loopback, in the same loop.

Each test runs ``asyncio.run`` itself: a :class:`Gateway` listens on
127.0.0.1 with a free port and answers according to the flow id in the path,
and a :class:`FlowClient` sends to it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from batchrun import __version__
from batchrun.client import (
    ERROR_LIMIT,
    FlowClient,
    Kind,
    Outcome,
    clean_message,
    describe_body,
    monotonic_ms,
    ssl_context,
)
from batchrun.config import EXECUTE_PATH, Secret, Target

TOKEN = "tok-5ecret-Q7x9"
READ_TIMEOUT = 0.3
SESSION_ID = "6f1f3c2e-8a43-4d2b-9d7e-0c4b8f1e2a55"
HUGE = 1024 * 1024


@dataclass
class Seen:
    """One request as the gateway received it."""

    raw_path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Gateway:
    """A loopback HTTP server whose answer depends on the flow id."""

    seen: list[Seen] = field(default_factory=list)
    redirect_target_hits: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    base_url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(EXECUTE_PATH.format(org="{org}", flow="{flow}"), self._on)
        app.router.add_route("*", "/elsewhere", self._on_redirect_target)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, flow: str, org: str = "demo-org") -> str:
        return Target(self.base_url, org, flow).url

    async def _on(self, request: web.Request) -> web.StreamResponse:
        headers = dict(request.headers)
        self.seen.append(Seen(request.raw_path, headers, await request.read()))
        flow = request.match_info["flow"]
        if flow in ANSWERS:
            return ANSWERS[flow](headers)
        return await SPECIAL[flow](self, request)

    async def _on_redirect_target(self, request: web.Request) -> web.StreamResponse:
        self.redirect_target_hits += 1
        return web.json_response({"sessionId": "from-the-redirect-target"})


def echo(headers: dict[str, str]) -> str:
    """What a careless proxy might say: the request's credentials, verbatim."""
    auth = headers.get("Authorization", "")
    return f"denied for {auth} (token {auth.removeprefix('Bearer ')})"


def status_json(status: int, body: Any) -> Callable[[dict[str, str]], web.Response]:
    return lambda headers: web.json_response(body, status=status)


ANSWERS: dict[str, Callable[[dict[str, str]], web.Response]] = {
    "ok": status_json(200, {"sessionId": SESSION_ID, "result": "Execution completed"}),
    "no-session": status_json(200, {"result": "Execution completed"}),
    "empty-session": status_json(200, {"sessionId": ""}),
    "list-body": status_json(200, [SESSION_ID]),
    "text-200": lambda h: web.Response(text="Execution completed"),
    "bad-json": status_json(400, {"error": "Missing required variable: phone"}),
    "bad-message": status_json(422, {"message": "phone is not a number"}),
    "bad-empty": lambda h: web.Response(status=400),
    "bad-html": lambda h: web.Response(
        status=400,
        text="<html>\r\n<body>\t<h1>400 Bad Request</h1>\x00\x1b[31m</body></html>",
        content_type="text/html",
    ),
    "bad-huge": lambda h: web.Response(
        status=400, body=b"<html>" + b"A" * HUGE, content_type="text/html"
    ),
    "bad-huge-json": lambda h: web.json_response({"error": "x" * HUGE}, status=400),
    "teapot": status_json(418, {"error": "I'm a teapot"}),
    "unauthorized": status_json(401, {"error": "Invalid token"}),
    "missing": status_json(404, {"error": "Flow not found"}),
    "throttled": lambda h: web.json_response(
        {"error": "Too Many Requests"}, status=429, headers={"Retry-After": "7"}
    ),
    "throttled-date": lambda h: web.Response(
        status=429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
    ),
    "throttled-bare": lambda h: web.Response(status=429),
    "s408": lambda h: web.Response(status=408),
    "s500": status_json(500, {"error": "Failed to execute flow s500"}),
    "s502": lambda h: web.Response(status=502, text="<html>Bad Gateway</html>"),
    "s503": lambda h: web.Response(status=503, headers={"Retry-After": "2"}),
    "s504": lambda h: web.Response(status=504),
    "echo-400-json": lambda h: web.json_response({"error": echo(h)}, status=400),
    "echo-400-html": lambda h: web.Response(status=400, text=f"<p>{echo(h)}</p>"),
    "echo-401": lambda h: web.json_response({"detail": echo(h)}, status=401),
    "echo-500": lambda h: web.Response(status=500, text=echo(h)),
}


async def slow(gateway: Gateway, request: web.Request) -> web.StreamResponse:
    """Answer only after the test releases it (long past the read timeout)."""
    try:
        await asyncio.wait_for(gateway.release.wait(), 5.0)
    except TimeoutError:
        pass
    return web.json_response({"sessionId": SESSION_ID})


async def drop(gateway: Gateway, request: web.Request) -> web.StreamResponse:
    """Close the connection without a word."""
    assert request.transport is not None
    request.transport.close()
    return web.Response()


def redirect(status: int) -> Callable[[Gateway, web.Request], Awaitable[web.Response]]:
    async def answer(gateway: Gateway, request: web.Request) -> web.Response:
        return web.Response(
            status=status, headers={"Location": gateway.base_url + "/elsewhere"}
        )

    return answer


async def redirect_with_token(
    gateway: Gateway, request: web.Request
) -> web.StreamResponse:
    """A login proxy that puts the credential it saw into the Location."""
    token = request.headers["Authorization"].removeprefix("Bearer ")
    location = f"{gateway.base_url}/elsewhere?access_token={token}"
    return web.Response(status=302, headers={"Location": location})


async def chunked(gateway: Gateway, request: web.Request) -> web.StreamResponse:
    """A 400 sent in chunks, with no Content-Length, as some proxies do."""
    response = web.StreamResponse(status=400)
    response.content_type = "application/json"
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b'{"error": "chun')
    await response.write(b'ked answer"}')
    await response.write_eof()
    return response


SPECIAL: dict[str, Callable[[Gateway, web.Request], Awaitable[web.StreamResponse]]] = {
    "chunked": chunked,
    "slow": slow,
    "drop": drop,
    "redirect-302": redirect(302),
    "redirect-307": redirect(307),
    "redirect-token": redirect_with_token,
}


def client_for(url: str, token: str = TOKEN) -> FlowClient:
    return FlowClient(
        url,
        Secret(token),
        concurrency=8,
        connect_timeout=2.0,
        read_timeout=READ_TIMEOUT,
    )


def call(
    flow: str,
    body: bytes = b'{"first_name": "Ada"}',
    key: str = "run1-1",
    org: str = "demo-org",
) -> tuple[Outcome, Gateway]:
    """Start a gateway, execute one flow on it, stop it; return what happened."""

    async def main() -> tuple[Outcome, Gateway]:
        gateway = Gateway()
        await gateway.start()
        try:
            async with client_for(gateway.url(flow, org)) as client:
                outcome = await client.execute(body, key)
        finally:
            await gateway.stop()
        return outcome, gateway

    return asyncio.run(main())


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def raw_call(reply: bytes) -> Outcome:
    """Execute against a bare TCP server that answers ``reply`` and hangs up."""

    async def answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.read(65536)
        writer.write(reply)
        await writer.drain()
        writer.close()

    async def main() -> Outcome:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with client_for(f"http://127.0.0.1:{port}/x") as client:
                return await client.execute(b"{}", "k")
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(main())


def assert_printable(text: str) -> None:
    assert text.isprintable(), repr(text)


# ------------------------------------------------------------ the request


def test_request_carries_token_key_content_type_and_body() -> None:
    body = '{"first_name": "Zoë", "n": 12345678901234567890}'.encode()

    outcome, gateway = call("ok", body=body, key="run1-42")

    [seen] = gateway.seen
    assert outcome.kind is Kind.SUCCEEDED
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["Idempotency-Key"] == "run1-42"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Accept"] == "application/json"
    assert seen.headers["User-Agent"] == f"batchrun/{__version__}"
    assert seen.body == body


def test_request_path_keeps_escaped_org_and_flow() -> None:
    outcome, gateway = call("ok", org="a%b ü")

    assert outcome.kind is Kind.SUCCEEDED
    assert gateway.seen[0].raw_path == (
        "/cgw/process/v1/orgs/a%25b%20%C3%BC/flows/ok/execute"
    )


def test_requests_run_concurrently_over_one_client() -> None:
    async def main() -> tuple[list[Outcome], Gateway]:
        gateway = Gateway()
        await gateway.start()
        try:
            async with client_for(gateway.url("ok")) as client:
                outcomes = await asyncio.gather(
                    *(client.execute(b"{}", f"k{n}") for n in range(20))
                )
        finally:
            await gateway.stop()
        return list(outcomes), gateway

    outcomes, gateway = asyncio.run(main())

    assert [o.kind for o in outcomes] == [Kind.SUCCEEDED] * 20
    keys = sorted(seen.headers["Idempotency-Key"] for seen in gateway.seen)
    assert keys == sorted(f"k{n}" for n in range(20))


# ----------------------------------------------------------------- success


def test_200_with_session_id_succeeds() -> None:
    outcome, _ = call("ok")

    assert outcome == Outcome(Kind.SUCCEEDED, 200, session_id=SESSION_ID)


@pytest.mark.parametrize(
    "flow", ["no-session", "empty-session", "list-body", "text-200"]
)
def test_200_without_session_id_is_unknown(flow: str) -> None:
    outcome, _ = call(flow)

    assert outcome == Outcome(
        Kind.UNKNOWN,
        200,
        error="HTTP 200 without a sessionId: the flow ran, but its session "
        "cannot be traced",
    )


def test_session_id_found_in_a_body_longer_than_the_read_limit() -> None:
    from batchrun.client import _success

    body = b'{"sessionId": "abc-123", "result": "' + b"x" * 100_000
    outcome = _success(200, body[:65536])

    assert outcome == Outcome(Kind.SUCCEEDED, 200, session_id="abc-123")


def test_numeric_session_id_is_kept_as_text() -> None:
    from batchrun.client import _success

    assert _success(200, b'{"sessionId": 12345}').session_id == "12345"


# --------------------------------------------------------------- rejected


@pytest.mark.parametrize(
    ("flow", "status", "error"),
    [
        ("bad-json", 400, "HTTP 400: Missing required variable: phone"),
        ("bad-message", 422, "HTTP 422: phone is not a number"),
        ("bad-empty", 400, "HTTP 400"),
        ("chunked", 400, "HTTP 400: chunked answer"),
        ("teapot", 418, "HTTP 418: I'm a teapot"),
        (
            "bad-html",
            400,
            "HTTP 400: <html> <body> <h1>400 Bad Request</h1> [31m</body></html>",
        ),
    ],
)
def test_client_errors_are_rejected_with_the_service_message(
    flow: str, status: int, error: str
) -> None:
    outcome, _ = call(flow)

    assert outcome == Outcome(Kind.REJECTED, status, error=error)


@pytest.mark.parametrize("flow", ["bad-huge", "bad-huge-json"])
def test_huge_failure_body_gives_a_short_printable_error(flow: str) -> None:
    outcome, _ = call(flow)

    assert outcome.kind is Kind.REJECTED
    assert outcome.error is not None
    assert outcome.error.startswith("HTTP 400: ")
    assert outcome.error.endswith("…")
    assert len(outcome.error) <= len("HTTP 400: ") + ERROR_LIMIT
    assert_printable(outcome.error)


@pytest.mark.parametrize("flow", ["bad-huge", "bad-huge-json"])
def test_huge_failure_body_error_stays_within_the_limit(flow: str) -> None:
    outcome, _ = call(flow)

    assert outcome.error is not None
    assert len(outcome.error) <= ERROR_LIMIT


@pytest.mark.parametrize("status", [302, 307])
def test_redirect_is_not_followed(status: int) -> None:
    outcome, gateway = call(f"redirect-{status}")

    assert outcome == Outcome(
        Kind.REJECTED,
        status,
        error=f"HTTP {status}: redirected to {gateway.base_url}/elsewhere; "
        "redirects are not followed, check --base-url",
    )
    assert len(gateway.seen) == 1
    assert gateway.redirect_target_hits == 0


# ------------------------------------------------------------------ fatal


@pytest.mark.parametrize(
    ("flow", "status", "error"),
    [
        ("unauthorized", 401, "HTTP 401: Invalid token"),
        ("missing", 404, "HTTP 404: Flow not found"),
    ],
)
def test_bad_token_and_unknown_flow_are_fatal(
    flow: str, status: int, error: str
) -> None:
    outcome, _ = call(flow)

    assert outcome == Outcome(Kind.FATAL, status, error=error)


# ------------------------------------------------------------------ retry


@pytest.mark.parametrize(
    ("flow", "status", "error", "retry_after"),
    [
        ("throttled", 429, "HTTP 429: Too Many Requests", "7"),
        ("throttled-date", 429, "HTTP 429", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ("throttled-bare", 429, "HTTP 429", None),
        ("s408", 408, "HTTP 408", None),
        ("s500", 500, "HTTP 500: Failed to execute flow s500", None),
        ("s502", 502, "HTTP 502: <html>Bad Gateway</html>", None),
        ("s503", 503, "HTTP 503", "2"),
        ("s504", 504, "HTTP 504", None),
    ],
)
def test_throttling_and_server_errors_are_retried(
    flow: str, status: int, error: str, retry_after: str | None
) -> None:
    outcome, _ = call(flow)

    assert outcome == Outcome(Kind.RETRY, status, error=error, retry_after=retry_after)


def test_connection_refused_is_retried() -> None:
    port = unused_port()

    async def main() -> Outcome:
        async with client_for(f"http://127.0.0.1:{port}/x") as client:
            return await client.execute(b"{}", "k")

    outcome = asyncio.run(main())

    assert outcome.kind is Kind.RETRY
    assert outcome.status is None
    assert outcome.error is not None
    assert outcome.error.startswith("cannot connect: ")
    assert str(port) in outcome.error


# --------------------------------------------------------------- in doubt


def test_read_timeout_is_in_doubt() -> None:
    outcome, gateway = call("slow")

    assert outcome == Outcome(
        Kind.IN_DOUBT,
        error=f"read timeout after {READ_TIMEOUT:g} s (the flow may have run)",
    )
    assert len(gateway.seen) == 1


def test_connection_closed_without_an_answer_is_in_doubt() -> None:
    outcome, gateway = call("drop")

    assert outcome == Outcome(
        Kind.IN_DOUBT,
        error="connection closed before an answer (the flow may have run)",
    )
    assert len(gateway.seen) == 1


def test_an_answer_that_is_not_http_is_in_doubt() -> None:
    outcome = raw_call(b"garbage\r\n\r\n")

    assert outcome.kind is Kind.IN_DOUBT
    assert outcome.error is not None
    assert outcome.error.startswith("connection lost: ")
    assert outcome.error.endswith(" (the flow may have run)")
    assert_printable(outcome.error)


def test_a_200_whose_body_is_cut_is_not_sent_again() -> None:
    outcome = raw_call(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"sessionId": '
    )

    assert outcome.kind not in (Kind.IN_DOUBT, Kind.RETRY)
    assert outcome.status == 200


@pytest.mark.skipif(
    sys.platform != "linux", reason="relies on Linux dropping SYNs to a full backlog"
)
def test_connect_timeout_is_retried() -> None:
    # A listening socket that never accepts, its one-slot backlog already
    # taken: further connection attempts get no answer at all.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(address)

        async def main() -> Outcome:
            client = FlowClient(
                f"http://127.0.0.1:{address[1]}/x",
                Secret(TOKEN),
                concurrency=2,
                connect_timeout=0.3,
                read_timeout=READ_TIMEOUT,
            )
            async with client:
                return await client.execute(b"{}", "k")

        try:
            outcome = asyncio.run(main())
        finally:
            for filler in fillers:
                filler.close()

    assert outcome == Outcome(Kind.RETRY, error="connect timeout after 0.3 s")


def test_execute_outside_the_context_is_a_programming_error() -> None:
    client = client_for("http://127.0.0.1:9/x")

    with pytest.raises(AssertionError, match="async context"):
        asyncio.run(client.execute(b"{}", "k"))


# ----------------------------------------------------------------- secrecy


@pytest.mark.parametrize(
    "flow", ["echo-400-json", "echo-400-html", "echo-401", "echo-500"]
)
def test_token_never_appears_in_an_error(flow: str) -> None:
    outcome, _ = call(flow)

    assert outcome.error is not None
    assert "[redacted]" in outcome.error
    assert TOKEN not in outcome.error
    assert TOKEN not in repr(outcome)


def test_token_never_appears_in_a_redirect_error() -> None:
    outcome, gateway = call("redirect-token")

    assert outcome.error is not None
    assert TOKEN not in outcome.error
    assert gateway.redirect_target_hits == 0


# ----------------------------------------------------------- the helpers


def test_clean_message_redacts_the_token_and_bearer_values() -> None:
    text = f"token {TOKEN} rejected; got 'Authorization: BEARER abc.def-ghi'"

    cleaned = clean_message(text, Secret(TOKEN))

    assert cleaned == (
        "token [redacted] rejected; got 'Authorization: BEARER [redacted]'"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Bearer xyz", "Bearer [redacted]"),
        ("bearer   xyz,next", "bearer [redacted],next"),
        ('{"auth": "Bearer abc"}', '{"auth": "Bearer [redacted]"}'),
    ],
)
def test_clean_message_redacts_bearer_values_without_a_token(
    text: str, expected: str
) -> None:
    assert clean_message(text) == expected


def test_clean_message_removes_control_characters_and_collapses_space() -> None:
    text = "line one\r\n\tline\x00two\x1b[0m \x7f\x85\x9bend  "

    assert clean_message(text) == "line one line two [0m end"


def test_clean_message_cuts_long_text_to_the_limit() -> None:
    cleaned = clean_message("word " * 1000)

    assert len(cleaned) == ERROR_LIMIT
    assert cleaned.endswith("…")


def test_clean_message_ignores_an_empty_token() -> None:
    assert clean_message("nothing secret", Secret("")) == "nothing secret"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": "e", "message": "m"}', "HTTP 400: e"),
        (b'{"message": "m", "detail": "d"}', "HTTP 400: m"),
        (b'{"detail": "d"}', "HTTP 400: d"),
        (b'{"error": {"code": 7}}', 'HTTP 400: {"error": {"code": 7}}'),
        (b'["a", "b"]', 'HTTP 400: ["a", "b"]'),
        (b"\xff\xfe not utf-8", "HTTP 400: \ufffd\ufffd not utf-8"),
        (b"", "HTTP 400"),
        (b"  \n ", "HTTP 400"),
    ],
)
def test_describe_body_reads_any_shape(body: bytes, expected: str) -> None:
    assert describe_body(400, body) == expected


def test_ssl_context_verifies_certificates() -> None:
    context = ssl_context(None)

    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname


def test_ssl_context_adds_a_ca_bundle() -> None:
    bundle = ssl.get_default_verify_paths().cafile
    if bundle is None:
        pytest.skip("this system has no CA bundle file to load")

    context = ssl_context(bundle)

    assert context.cert_store_stats()["x509_ca"] > 0
    assert context.verify_mode is ssl.CERT_REQUIRED


def test_monotonic_ms_counts_milliseconds() -> None:
    assert 900 <= monotonic_ms(time.monotonic() - 1.0) <= 1100
