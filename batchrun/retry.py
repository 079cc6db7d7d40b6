"""Retry policy: which outcomes are worth another attempt, and how long to wait.

Waits are exponential with full jitter (a random time between zero and the
exponential ceiling) so that many workers failing together do not retry
together. A Retry-After header, in seconds or as an HTTP date, sets a floor.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Return the seconds a Retry-After header asks for, or None if unreadable.

    ``now`` is the wall-clock time (Unix seconds) used for HTTP dates.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if 0 <= seconds < float("inf") else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


@dataclass
class RetryPolicy:
    """How many attempts a row gets and how long to wait between them."""

    max_attempts: int = 5
    max_wait: float = 120.0
    base: float = BACKOFF_BASE
    cap: float = BACKOFF_CAP
    random: Callable[[], float] = field(default=random.random)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.cap, self.max_wait, self.base * 2 ** (attempt - 1))
        return float(ceiling * self.random())

    def wait(self, attempt: int, retry_after: float | None) -> float:
        """The wait before the next attempt: backoff, at least Retry-After."""
        backoff = self.backoff(attempt)
        return backoff if retry_after is None else max(retry_after, backoff)

    def can_retry(self, attempt: int) -> bool:
        """True while attempts remain after attempt number ``attempt``."""
        return attempt < self.max_attempts
