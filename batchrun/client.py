"""The flow execution call: the only module that knows the HTTP library.

batchrun uses aiohttp directly. With hundreds or thousands of slow requests in
flight, its connection pool keeps up where httpx's own pool collapses, and it
costs less CPU per request than httpx over an aiohttp transport; see the
README's benchmark section for the figures.

Every answer, and every way a request can fail, becomes an :class:`Outcome`
whose ``kind`` tells the pool what to do next.
"""

from __future__ import annotations

import enum
import json
import re
import ssl
import time
from dataclasses import dataclass
from types import TracebackType

import aiohttp

from . import __version__
from .config import Secret
from .redact import ERROR_LIMIT, clean_message

BODY_LIMIT = 64 * 1024
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
FATAL_STATUSES = frozenset({401, 404})


class Kind(enum.Enum):
    """What an attempt's outcome means for the row and the run."""

    SUCCEEDED = "succeeded"  # executed; session id known
    REJECTED = "rejected"  # the row's data or request is wrong: do not retry
    FATAL = "fatal"  # every row would fail (bad token, unknown flow)
    RETRY = "retry"  # not executed; safe to try again
    IN_DOUBT = "in_doubt"  # sent, answer lost: the flow may have run
    UNKNOWN = "unknown"  # answered 2xx without a session id: ran, untraceable


@dataclass(slots=True)
class Outcome:
    """The result of one attempt."""

    kind: Kind
    status: int | None = None
    session_id: str | None = None
    error: str | None = None
    retry_after: str | None = None


_SESSION_ID = re.compile(rb'"sessionId"\s*:\s*"([^"\\]{1,200})"')


def describe_body(status: int, body: bytes, token: Secret | None = None) -> str:
    """A readable error from a failure body, whatever its shape."""
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for field in ("error", "message", "detail"):
            if isinstance(parsed.get(field), str):
                text = parsed[field]
                break
    message = clean_message(text, token)
    result = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    return result if len(result) <= ERROR_LIMIT else result[: ERROR_LIMIT - 1] + "…"


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """TLS with verification on; ``ca_bundle`` adds trusted certificates."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


class FlowClient:
    """Executes the flow over one shared connection pool; use ``async with``."""

    def __init__(
        self,
        url: str,
        token: Secret,
        *,
        concurrency: int,
        connect_timeout: float,
        read_timeout: float,
        ca_bundle: str | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._headers = {
            "Authorization": f"Bearer {token.reveal()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"batchrun/{__version__}",
        }
        self._ca_bundle = ca_bundle
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> FlowClient:
        connector = aiohttp.TCPConnector(
            limit=self._concurrency,
            limit_per_host=0,
            ttl_dns_cache=300,
            ssl=ssl_context(self._ca_bundle) if self.url.startswith("https") else True,
        )
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def execute(self, body: bytes, idempotency_key: str) -> Outcome:
        """Send one execution request and classify what happened."""
        assert self._session is not None, "use FlowClient as an async context"
        headers = dict(self._headers)
        headers["Idempotency-Key"] = idempotency_key
        try:
            async with self._session.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                try:
                    data = await _read_bounded(response)
                except (aiohttp.ClientError, TimeoutError):
                    if 200 <= response.status < 300:
                        return Outcome(
                            Kind.REJECTED,
                            response.status,
                            error=f"HTTP {response.status} but the answer was cut "
                            "off; the flow ran, its session id is unknown",
                        )
                    raise
                return self._classify(response, data)
        except aiohttp.ConnectionTimeoutError:
            return Outcome(
                Kind.RETRY, error=f"connect timeout after {self.connect_timeout:g} s"
            )
        except aiohttp.ClientConnectorError as exc:
            reason = clean_message(str(exc.os_error.strerror or exc.os_error))
            return Outcome(Kind.RETRY, error=f"cannot connect: {reason}")
        except (TimeoutError, aiohttp.SocketTimeoutError):
            return Outcome(
                Kind.IN_DOUBT,
                error=(
                    f"read timeout after {self.read_timeout:g} s "
                    "(the flow may have run)"
                ),
            )
        except aiohttp.ServerDisconnectedError:
            return Outcome(
                Kind.IN_DOUBT,
                error="connection closed before an answer (the flow may have run)",
            )
        except aiohttp.ClientError as exc:
            reason = clean_message(str(exc) or type(exc).__name__, self.token)
            return Outcome(
                Kind.IN_DOUBT,
                error=f"connection lost: {reason} (the flow may have run)",
            )

    def _classify(self, response: aiohttp.ClientResponse, data: bytes) -> Outcome:
        status = response.status
        if 200 <= status < 300:
            return _success(status, data)
        if 300 <= status < 400:
            where = clean_message(
                response.headers.get("Location", "nowhere"), self.token
            )
            return Outcome(
                Kind.REJECTED,
                status,
                error=f"HTTP {status}: redirected to {where}; redirects are not "
                "followed, check --base-url",
            )
        error = describe_body(status, data, self.token)
        if status in FATAL_STATUSES:
            return Outcome(Kind.FATAL, status, error=error)
        if status in RETRY_STATUSES:
            retry_after = response.headers.get("Retry-After")
            return Outcome(Kind.RETRY, status, error=error, retry_after=retry_after)
        return Outcome(Kind.REJECTED, status, error=error)


def _success(status: int, data: bytes) -> Outcome:
    try:
        parsed = json.loads(data)
        session_id = parsed.get("sessionId") if isinstance(parsed, dict) else None
    except ValueError:
        # A body longer than the read limit is cut; find the id in what came.
        match = _SESSION_ID.search(data)
        session_id = match.group(1).decode("utf-8", "replace") if match else None
    if isinstance(session_id, int) and not isinstance(session_id, bool):
        session_id = str(session_id)
    if not isinstance(session_id, str) or not session_id:
        return Outcome(
            Kind.UNKNOWN,
            status,
            error=f"HTTP {status} without a sessionId: the flow ran, but its "
            "session cannot be traced",
        )
    return Outcome(Kind.SUCCEEDED, status, session_id=clean_message(session_id))


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    """Read the body, but never more than BODY_LIMIT bytes of it."""
    length = response.content_length
    if length is not None and length <= BODY_LIMIT:
        return await response.read()
    chunks: list[bytes] = []
    size = 0
    while size < BODY_LIMIT:
        chunk = await response.content.read(BODY_LIMIT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def monotonic_ms(start: float) -> int:
    """Milliseconds elapsed since the monotonic time ``start``."""
    return int((time.monotonic() - start) * 1000)
