"""Rate limiting: a hard ceiling per window, smooth spacing, pauses, adaptation.

Three rules decide when the next request may go:

* spacing: requests are spread evenly, one every ``period / count`` seconds
  (GCRA); ``burst`` lets that many go back to back, and at start only one.
* ceiling: a log of the last ``count`` send times guarantees that no window
  of ``period`` seconds ever holds more than ``count`` requests, whatever the
  event loop's timing does to the spacing.
* pause: a Retry-After answer holds every request until the time it named.

When 429 answers become frequent (half of the recent answers or more)
the spacing widens (the rate halves, at most once a second) and recovers
slowly after a quiet spell, so a run whose rate is too high converges on what
the service allows. A stray 429 only pauses for its Retry-After. The clock
and sleep are injected for tests.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

from .config import Rate

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# The ceiling's window is stretched by this fraction so that timing jitter
# between here and the service (a late wake-up, a pause of either process)
# never shows as an extra request in a window there; it costs at most 0.8%
# of the configured rate.
WINDOW_MARGIN = 0.008
# How far behind schedule spacing may catch up after a late wake-up.
CATCH_UP = 0.02
SLOWDOWN = 0.5
SLOWDOWN_COOLDOWN = 1.0
RECOVERY = 1.1
QUIET_SPELL = 5.0
MIN_RATE = 0.1
# Slow down only when this share of the last RECENT answers were 429s (and
# at least MIN_ANSWERS were seen): a stray 429 only pauses for Retry-After.
THROTTLE_SHARE = 0.5
RECENT = 20
MIN_ANSWERS = 8


class RateLimiter:
    """Decides when each request may be sent; one instance per run."""

    def __init__(
        self,
        rate: Rate | None = None,
        *,
        burst: int = 1,
        adaptive: bool = True,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.adaptive = adaptive
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._paused_until = 0.0
        self._tat = 0.0  # theoretical arrival time of the next request (GCRA)
        self._sent: collections.deque[float] = collections.deque(
            maxlen=rate.count if rate else 1
        )
        self._factor = 1.0  # adaptive multiplier on the configured rate
        self._adapted: Rate | None = None  # rate learned when none was given
        self._last_throttle = -1e18
        self._last_recovery = -1e18
        self._recent: collections.deque[bool] = collections.deque(maxlen=RECENT)
        self._second = 0
        self._sent_this_second = 0
        self._sent_last_second = 0

    @property
    def current_rate(self) -> float | None:
        """Requests per second now allowed, or None when unlimited."""
        base = self.rate or self._adapted
        return base.per_second * self._factor if base else None

    async def acquire(self) -> None:
        """Wait until one more request may be sent, and count it as sent."""
        if self.rate is None and self._adapted is None and not self._paused_until:
            self._count(self._clock())
            return
        async with self._lock:
            while True:
                now = self._clock()
                delay = self.delay(now)
                if delay <= 0:
                    self._take(now)
                    return
                await self._sleep(delay)

    def delay(self, now: float) -> float:
        """Seconds until a request may go, given the time now (0 if it may)."""
        self._recover(now)
        wait = self._paused_until - now
        base = self.rate or self._adapted
        if base is not None:
            interval = base.period / (base.count * self._factor)
            tolerance = (self.burst - 1) * interval
            wait = max(wait, self._tat - tolerance - now)
        if self.rate is not None and len(self._sent) == self._sent.maxlen:
            window = self.rate.period * (1 + WINDOW_MARGIN)
            wait = max(wait, self._sent[0] + window - now)
        return wait

    def _take(self, now: float) -> None:
        base = self.rate or self._adapted
        if base is not None:
            interval = base.period / (base.count * self._factor)
            if now - self._tat > max(interval, CATCH_UP):
                self._tat = now + interval  # idle or first request: no credit
            else:
                self._tat = max(self._tat, now - max(interval, CATCH_UP)) + interval
        if self.rate is not None:
            self._sent.append(now)
        self._count(now)

    def _count(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            self._sent_last_second = (
                self._sent_this_second if second == self._second + 1 else 0
            )
            self._second, self._sent_this_second = second, 0
        self._sent_this_second += 1

    def pause_until(self, when: float) -> None:
        """Hold every request until the monotonic time ``when``."""
        self._paused_until = max(self._paused_until, when)

    def answered(self, throttled: bool) -> None:
        """Note an answer; slow down if 429s have become frequent."""
        self._recent.append(throttled)
        if throttled:
            share = sum(self._recent) / len(self._recent)
            if len(self._recent) >= MIN_ANSWERS and share >= THROTTLE_SHARE:
                self.throttled()

    def throttled(self) -> None:
        """Slow down now, at most once per cooldown."""
        if not self.adaptive:
            return
        now = self._clock()
        self._last_recovery = now
        if now - self._last_throttle < SLOWDOWN_COOLDOWN:
            return
        self._last_throttle = now
        if self.rate is None and self._adapted is None:
            observed = max(self._sent_last_second, self._sent_this_second, 1)
            self._adapted = Rate(observed, 1.0)
            self._tat = now
        floor = MIN_RATE / (self.rate or self._adapted or Rate(1, 1)).per_second
        self._factor = max(self._factor * SLOWDOWN, min(floor, 1.0))

    def _recover(self, now: float) -> None:
        if self._factor >= 1.0 and self._adapted is None:
            return
        if now - self._last_recovery < QUIET_SPELL:
            return
        self._last_recovery = now
        self._factor *= RECOVERY
        if self._adapted is not None and self._factor > 4.0:
            self._adapted, self._factor = None, 1.0  # back to unlimited
        elif self.rate is not None:
            self._factor = min(self._factor, 1.0)
