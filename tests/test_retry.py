"""Retry policy: Retry-After parsing, jittered backoff, and the attempt limit."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from batchrun.retry import BACKOFF_BASE, BACKOFF_CAP, RetryPolicy, parse_retry_after

NOW = 1_700_000_000.0  # a fixed wall-clock time for HTTP dates


def http_date(unix: float) -> str:
    return format_datetime(datetime.fromtimestamp(unix, UTC), usegmt=True)


# ----------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0", 0.0), ("5", 5.0), ("  120 ", 120.0), ("1.5", 1.5), ("86400", 86400.0)],
)
def test_parse_retry_after_reads_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_parse_retry_after_reads_a_future_http_date_as_seconds_from_now() -> None:
    assert parse_retry_after(http_date(NOW + 30), now=NOW) == pytest.approx(30.0)


def test_parse_retry_after_reads_the_imf_fixdate_example() -> None:
    value = "Wed, 21 Oct 2015 07:28:00 GMT"
    now = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC).timestamp()

    assert parse_retry_after(value, now=now) == pytest.approx(60.0)


@pytest.mark.parametrize("ago", [0.0, 1.0, 3600.0])
def test_parse_retry_after_treats_a_past_http_date_as_zero(ago: float) -> None:
    assert parse_retry_after(http_date(NOW - ago), now=NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "5 seconds",
        "nan",
        "Wed, 21 Oct 2015",
        "Wed, 21 Oct 2015 07:28:00",  # no zone: cannot tell when
        "Mon, 99 Foo 2015 07:28:00 GMT",
    ],
)
def test_parse_retry_after_returns_none_for_garbage(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize("value", ["-1", "-0.5", "-86400"])
def test_parse_retry_after_returns_none_for_negative_seconds(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize("value", ["inf", "Infinity", "1e999"])
def test_parse_retry_after_returns_none_for_infinity(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_parse_retry_after_uses_the_wall_clock_by_default() -> None:
    wait = parse_retry_after(http_date(datetime.now(UTC).timestamp() + 100))

    assert wait is not None and 95.0 <= wait <= 100.0


# --------------------------------------------------------------- backoff


class FixedRandom:
    """A random() that returns the given values in turn."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def __call__(self) -> float:
        return self.values.pop(0)


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (6, 16.0), (7, 30.0), (40, 30.0)],
)
def test_backoff_ceiling_doubles_up_to_the_cap(attempt: int, ceiling: float) -> None:
    policy = RetryPolicy(max_wait=1000.0, random=FixedRandom(0.0, 0.5, 0.999999))

    waits = [policy.backoff(attempt) for _ in range(3)]

    assert (BACKOFF_BASE, BACKOFF_CAP) == (0.5, 30.0)
    assert waits == pytest.approx([0.0, ceiling / 2, ceiling * 0.999999])


def test_backoff_never_exceeds_max_wait() -> None:
    policy = RetryPolicy(max_wait=3.0, random=FixedRandom(0.999999, 0.999999))

    assert policy.backoff(10) == pytest.approx(3.0, rel=1e-5)
    assert policy.backoff(1) == pytest.approx(0.5, rel=1e-5)


@pytest.mark.parametrize("attempt", range(1, 15))
def test_backoff_full_jitter_stays_within_bounds(attempt: int) -> None:
    policy = RetryPolicy()
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))

    waits = [policy.backoff(attempt) for _ in range(200)]

    assert all(0.0 <= wait <= ceiling for wait in waits)
    assert max(waits) > ceiling / 2  # jitter spreads over the range


def test_wait_takes_retry_after_as_a_minimum() -> None:
    policy = RetryPolicy(random=FixedRandom(0.5, 0.5, 0.5))

    assert policy.wait(1, 10.0) == 10.0  # backoff 0.25 < 10
    assert policy.wait(7, 2.0) == 15.0  # backoff 15 > 2
    assert policy.wait(1, 0.0) == 0.25


def test_wait_without_retry_after_is_the_backoff() -> None:
    policy = RetryPolicy(random=FixedRandom(0.5))

    assert policy.wait(3, None) == 1.0


@pytest.mark.parametrize(
    ("max_attempts", "attempt", "expected"),
    [(5, 1, True), (5, 4, True), (5, 5, False), (5, 6, False), (1, 1, False)],
)
def test_can_retry_while_attempts_remain(
    max_attempts: int, attempt: int, expected: bool
) -> None:
    assert RetryPolicy(max_attempts=max_attempts).can_retry(attempt) is expected
