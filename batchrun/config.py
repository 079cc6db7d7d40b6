"""The frozen configuration of a run, its validation and its defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from .errors import UsageError
from .sources import SourceOptions

DEFAULT_CONCURRENCY = 32
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 300.0
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_MAX_RETRY_WAIT = 120.0
DEFAULT_GRACE = 10.0
DEFAULT_MAX_CONSECUTIVE_FAILURES = 100
DEFAULT_BURST = 1

EMPTY_POLICIES = ("text", "null", "omit")
IN_DOUBT_POLICIES = ("resend", "skip")
EXECUTE_PATH = "/cgw/process/v1/orgs/{org}/flows/{flow}/execute"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class Secret:
    """A string that never shows itself in a repr, a log line or a message."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` requests in any window of ``period`` seconds."""

    count: int
    period: float

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        unit = "s" if self.period == 1 else "min"
        return f"{self.count}/{unit}"


_RATE_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute)\s*$", re.I)


def parse_rate(text: str) -> Rate:
    """Parse "20/s" or "600/min"; raise UsageError naming --rate otherwise."""
    match = _RATE_PATTERN.match(text)
    if not match or int(match.group(1)) < 1:
        raise UsageError(
            f"--rate {text!r} is not a rate; write requests per second or minute, "
            "for example --rate 20/s or --rate 600/min"
        )
    period = 1.0 if match.group(2).lower().startswith("s") else 60.0
    return Rate(int(match.group(1)), period)


def check_path_segment(option: str, value: str) -> str:
    """Validate an org or flow identifier and return it unchanged."""
    problem = None
    if not value or not value.strip():
        problem = "is empty"
    elif value != value.strip() or any(c.isspace() for c in value):
        problem = "contains whitespace"
    elif "/" in value or "\\" in value:
        problem = "contains a slash"
    elif value in (".", "..") or ".." in value:
        problem = "contains '..'"
    elif any(ord(c) < 32 or ord(c) == 127 for c in value):
        problem = "contains a control character"
    if problem:
        raise UsageError(
            f"{option} {value!r} {problem}; give the identifier exactly as the "
            "platform shows it"
        )
    return value


def check_base_url(value: str, *, allow_insecure_http: bool = False) -> str:
    """Validate the base URL and return it without a trailing slash."""
    parts = urlsplit(value.strip())
    if parts.username or parts.password:
        raise UsageError(
            "--base-url must not carry credentials; put the token in BATCHRUN_TOKEN "
            "or --token-file"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"--base-url {value!r} is not an http(s) URL; give the gateway address, "
            "for example --base-url https://gateway.example.com"
        )
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise UsageError(
            f"--base-url {value!r} has a query or fragment; give only scheme, host "
            "and optional path prefix"
        )
    insecure = parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS
    if insecure and not allow_insecure_http:
        raise UsageError(
            f"--base-url {value!r} uses plain http to a host other than loopback, "
            "which would expose the token; use https, or pass --allow-insecure-http"
        )
    return value.strip().rstrip("/")


@dataclass(frozen=True, slots=True)
class Target:
    """Where the flow is executed: gateway, organisation and flow."""

    base_url: str
    org: str
    flow: str

    @property
    def url(self) -> str:
        """The execute URL, with org and flow escaped as path segments."""
        path = EXECUTE_PATH.format(
            org=quote(self.org, safe=""), flow=quote(self.flow, safe="")
        )
        return self.base_url + path


@dataclass(frozen=True, slots=True)
class Mapping:
    """How a row's values become the flow's variables."""

    columns: tuple[str, ...] | None = None
    rename: tuple[tuple[str, str], ...] = ()
    constants: tuple[tuple[str, str], ...] = ()
    require: tuple[str, ...] = ()
    empty: str = "text"
    row_id_var: str | None = None

    @property
    def is_identity(self) -> bool:
        """True when values are sent exactly as read, with nothing to apply."""
        return (
            self.columns is None
            and not self.rename
            and not self.constants
            and not self.require
            and self.empty == "text"
            and self.row_id_var is None
        )

    def describe(self) -> dict[str, object]:
        """A JSON-safe description, stored in the checkpoint."""
        return {
            "columns": list(self.columns) if self.columns is not None else None,
            "rename": [list(pair) for pair in self.rename],
            "constants": [list(pair) for pair in self.constants],
            "require": list(self.require),
            "empty": self.empty,
            "row_id_var": self.row_id_var,
        }


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything one `batchrun run` needs; built by the CLI or the Python API."""

    input: str
    output: str
    target: Target
    token: Secret = field(repr=True)
    source: SourceOptions = SourceOptions()
    mapping: Mapping = Mapping()
    concurrency: int = DEFAULT_CONCURRENCY
    rate: Rate | None = None
    burst: int = DEFAULT_BURST
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES
    resend_in_doubt: bool = True
    in_doubt: str = "resend"
    include_input: bool = False
    restart: bool = False
    retry_failed: bool = False
    key_column: str | None = None
    grace: float = DEFAULT_GRACE
    ca_bundle: str | None = None
    failed_out: str | None = None
    limit: int | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        positive = {
            "--concurrency": self.concurrency,
            "--burst": self.burst,
            "--max-attempts": self.max_attempts,
            "--max-consecutive-failures": self.max_consecutive_failures,
        }
        for option, number in positive.items():
            if number < 1:
                raise UsageError(f"{option} must be at least 1, got {number}")
        timeouts = {
            "--connect-timeout": self.connect_timeout,
            "--timeout": self.read_timeout,
        }
        for option, seconds in timeouts.items():
            if not seconds > 0:
                raise UsageError(f"{option} must be a positive number of seconds")
        if not self.max_retry_wait >= 0 or not self.grace >= 0:
            raise UsageError("--max-retry-wait and --grace must be 0 or more seconds")
        if self.mapping.empty not in EMPTY_POLICIES:
            raise UsageError(f"--empty must be one of {', '.join(EMPTY_POLICIES)}")
        if self.in_doubt not in IN_DOUBT_POLICIES:
            raise UsageError(
                f"--in-doubt must be one of {', '.join(IN_DOUBT_POLICIES)}"
            )
        if self.restart and self.retry_failed:
            raise UsageError("--restart and --retry-failed cannot be used together")
