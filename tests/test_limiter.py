"""The rate limiter, driven by a fake clock whose sleep advances it: no waiting."""

from __future__ import annotations

import asyncio
import bisect
import random
from collections.abc import Callable

import pytest

from batchrun import limiter as limiter_module
from batchrun.config import Rate
from batchrun.limiter import RateLimiter

# time.monotonic() is never near zero in a real process; a limiter must not
# treat its first request differently because the clock starts far from 0.
REAL_START = 86_400.25
RATES = (7, 20, 100, 1000)
ACQUISITIONS = 5000
# How late an event loop may wake a sleeper, for the late wake-up tests.
MAX_LATE = 0.001


class FakeTime:
    """A clock and a sleep: sleeping moves the clock, nothing really waits."""

    def __init__(self, start: float = 0.0, late: Callable[[], float] | None = None):
        self.now = start
        self.sleeps: list[float] = []
        self._late = late

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0) + (self._late() if self._late else 0.0)
        await asyncio.sleep(0)  # let other tasks run, as a real sleep would

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_limiter(
    rate: Rate | None, time: FakeTime, burst: int = 1, adaptive: bool = True
) -> RateLimiter:
    return RateLimiter(
        rate, burst=burst, adaptive=adaptive, clock=time.clock, sleep=time.sleep
    )


async def acquire_times(
    limiter: RateLimiter, time: FakeTime, count: int
) -> list[float]:
    """Acquire ``count`` times in this task; return the time of each send."""
    times: list[float] = []
    for _ in range(count):
        await limiter.acquire()
        times.append(time.now)
    return times


def send_times(limiter: RateLimiter, time: FakeTime, count: int) -> list[float]:
    """Acquire ``count`` times in a fresh event loop (one per limiter)."""
    return asyncio.run(acquire_times(limiter, time, count))


def busiest_window(times: list[float], period: float) -> int:
    """The most sends in any half-open window [t, t + period)."""
    # A busiest window can always be slid right until it starts at a send.
    return max(
        bisect.bisect_left(times, start + period, lo=index) - index
        for index, start in enumerate(times)
    )


def mean_rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0])


# ------------------------------------------------------------------ ceiling


@pytest.mark.parametrize("start", [0.0, REAL_START])
@pytest.mark.parametrize("burst", [1, 5])
@pytest.mark.parametrize("count", RATES)
def test_no_one_second_window_holds_more_than_the_rate(
    count: int, burst: int, start: float
) -> None:
    time = FakeTime(start)
    limiter = make_limiter(Rate(count, 1.0), time, burst=burst)

    times = send_times(limiter, time, ACQUISITIONS)

    assert busiest_window(times, 1.0) <= count
    assert mean_rate(times) == pytest.approx(count, rel=0.01)


@pytest.mark.parametrize("count", RATES)
def test_ceiling_holds_when_wake_ups_are_late(count: int) -> None:
    jitter = random.Random(count)
    time = FakeTime(REAL_START, late=lambda: jitter.uniform(0, MAX_LATE))
    limiter = make_limiter(Rate(count, 1.0), time)

    times = send_times(limiter, time, ACQUISITIONS)

    assert busiest_window(times, 1.0) <= count
    assert mean_rate(times) == pytest.approx(count, rel=0.01)


def test_ceiling_holds_across_concurrent_tasks() -> None:
    time = FakeTime(REAL_START)
    limiter = make_limiter(Rate(50, 1.0), time)
    times: list[float] = []

    async def worker() -> None:
        for _ in range(50):
            await limiter.acquire()
            times.append(time.now)

    async def main() -> None:
        await asyncio.gather(*(worker() for _ in range(20)))

    asyncio.run(main())

    assert len(times) == 1000
    assert times == sorted(times)
    assert busiest_window(times, 1.0) <= 50
    assert mean_rate(times) == pytest.approx(50, rel=0.01)


def test_per_minute_rate_spreads_sends_over_the_minute() -> None:
    time = FakeTime(0.0)
    limiter = make_limiter(Rate(600, 60.0), time)

    times = send_times(limiter, time, ACQUISITIONS)

    assert busiest_window(times, 60.0) <= 600
    assert busiest_window(times, 1.0) <= 11  # 10/s, plus rounding at an edge
    assert times[1] - times[0] == pytest.approx(0.1)
    assert mean_rate(times) == pytest.approx(10.0, rel=0.01)


# ------------------------------------------------------------------ spacing


@pytest.mark.parametrize("start", [0.0, pytest.param(REAL_START, id="real-clock")])
@pytest.mark.parametrize("count", RATES)
def test_first_two_sends_are_one_interval_apart(count: int, start: float) -> None:
    time = FakeTime(start)
    limiter = make_limiter(Rate(count, 1.0), time)

    times = send_times(limiter, time, 3)

    assert times[1] - times[0] >= 1.0 / count - 1e-9
    assert times[2] - times[1] >= 1.0 / count - 1e-9


@pytest.mark.parametrize("start", [0.0, pytest.param(REAL_START, id="real-clock")])
@pytest.mark.parametrize("burst", [2, 5, 10])
def test_burst_lets_exactly_that_many_go_at_once(burst: int, start: float) -> None:
    time = FakeTime(start)
    limiter = make_limiter(Rate(20, 1.0), time, burst=burst)

    times = send_times(limiter, time, burst + 2)

    assert times[burst - 1] - times[0] < 1e-6  # float rounding, not waiting
    assert times[burst] - times[0] >= 1.0 / 20 - 1e-9


def test_delay_is_zero_when_a_request_may_go() -> None:
    time = FakeTime(10.0)
    limiter = make_limiter(Rate(10, 1.0), time)

    assert limiter.delay(time.now) <= 0


# ------------------------------------------------------------------- pause


@pytest.mark.parametrize("rate", [Rate(100, 1.0), None])
def test_pause_until_holds_every_acquisition_until_then(rate: Rate | None) -> None:
    time = FakeTime(REAL_START)
    limiter = make_limiter(rate, time)
    resume_at = REAL_START + 7.5
    times: list[float] = []

    async def worker() -> None:
        await limiter.acquire()
        times.append(time.now)

    async def main() -> None:
        limiter.pause_until(resume_at)
        await asyncio.gather(*(worker() for _ in range(10)))

    asyncio.run(main())

    assert len(times) == 10
    assert min(times) >= resume_at
    assert min(times) == pytest.approx(resume_at)


def test_pause_until_never_shortens_a_longer_pause() -> None:
    time = FakeTime(100.0)
    limiter = make_limiter(Rate(100, 1.0), time)

    limiter.pause_until(130.0)
    limiter.pause_until(110.0)
    times = send_times(limiter, time, 1)

    assert times == [pytest.approx(130.0)]


def test_pause_in_the_past_does_not_delay() -> None:
    time = FakeTime(100.0)
    limiter = make_limiter(None, time)

    limiter.pause_until(99.0)
    times = send_times(limiter, time, 3)

    assert times == [100.0, 100.0, 100.0]
    assert time.sleeps == []


# --------------------------------------------------------------- unlimited


def test_unlimited_never_sleeps() -> None:
    time = FakeTime(REAL_START)
    limiter = make_limiter(None, time)

    times = send_times(limiter, time, 10_000)

    assert time.sleeps == []
    assert times == [REAL_START] * 10_000
    assert limiter.current_rate is None


# -------------------------------------------------------------- adaptation


def test_throttled_halves_the_rate_at_most_once_per_cooldown() -> None:
    time = FakeTime(REAL_START)
    limiter = make_limiter(Rate(100, 1.0), time)

    limiter.throttled()
    first = limiter.current_rate
    time.advance(limiter_module.SLOWDOWN_COOLDOWN / 2)
    limiter.throttled()
    within_cooldown = limiter.current_rate
    time.advance(limiter_module.SLOWDOWN_COOLDOWN / 2)
    limiter.throttled()

    assert limiter_module.SLOWDOWN == 0.5
    assert first == pytest.approx(50.0)
    assert within_cooldown == pytest.approx(50.0)
    assert limiter.current_rate == pytest.approx(25.0)


def test_throttled_widens_the_spacing() -> None:
    time = FakeTime(REAL_START)
    limiter = make_limiter(Rate(100, 1.0), time)

    async def scenario() -> list[float]:
        await acquire_times(limiter, time, 10)
        limiter.throttled()
        return await acquire_times(limiter, time, 200)

    times = asyncio.run(scenario())

    gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]
    assert min(gaps) >= 1 / 50 - 1e-9
    assert mean_rate(times) == pytest.approx(50, rel=0.01)


def test_throttled_stops_at_the_minimum_rate() -> None:
    time = FakeTime(REAL_START)
    limiter = make_limiter(Rate(1, 1.0), time)
    seen = []

    for _ in range(6):
        limiter.throttled()
        seen.append(limiter.current_rate)
        time.advance(limiter_module.SLOWDOWN_COOLDOWN)

    assert seen == pytest.approx([0.5, 0.25, 0.125, 0.1, 0.1, 0.1])


def test_throttled_leaves_a_rate_below_the_minimum_alone() -> None:
    time = FakeTime(REAL_START)
    limiter = make_limiter(Rate(1, 60.0), time)

    limiter.throttled()

    assert limiter.current_rate == pytest.approx(1 / 60)


def test_a_stray_429_does_not_slow_down() -> None:
    time = FakeTime(REAL_START)
    limiter = make_limiter(Rate(100, 1.0), time)

    for _ in range(limiter_module.RECENT - 1):
        limiter.answered(False)
    limiter.answered(True)

    assert limiter.current_rate == 100.0


def test_frequent_429s_slow_down_once_enough_answers_are_seen() -> None:
    time = FakeTime(REAL_START)
    limiter = make_limiter(Rate(100, 1.0), time)
    rates = []

    for _ in range(limiter_module.MIN_ANSWERS):
        limiter.answered(True)
        rates.append(limiter.current_rate)

    assert rates[:-1] == [100.0] * (limiter_module.MIN_ANSWERS - 1)
    assert rates[-1] == pytest.approx(50.0)


def test_429s_at_the_throttle_share_slow_down() -> None:
    time = FakeTime(REAL_START)
    limiter = make_limiter(Rate(100, 1.0), time)
    rates = []

    for _ in range(limiter_module.MIN_ANSWERS // 2):  # one 429 in every two
        limiter.answered(False)
        limiter.answered(True)
        rates.append(limiter.current_rate)

    assert limiter_module.THROTTLE_SHARE == 0.5
    assert rates[:-1] == [100.0] * (len(rates) - 1)
    assert rates[-1] == pytest.approx(50.0)


def test_throttled_does_nothing_when_not_adaptive() -> None:
    time = FakeTime(REAL_START)
    limiter = make_limiter(Rate(100, 1.0), time, adaptive=False)

    limiter.throttled()

    assert limiter.current_rate == 100.0


def test_rate_recovers_by_a_tenth_per_quiet_spell_up_to_the_given_rate() -> None:
    time = FakeTime(REAL_START)
    limiter = make_limiter(Rate(100, 1.0), time)
    limiter.throttled()
    time.advance(1.0)
    limiter.throttled()
    seen = []

    for _ in range(20):
        time.advance(limiter_module.QUIET_SPELL - 0.01)
        limiter.delay(time.now)
        unchanged = limiter.current_rate
        time.advance(0.01)
        limiter.delay(time.now)
        seen.append((unchanged, limiter.current_rate))

    assert limiter_module.RECOVERY == 1.1
    assert seen[0] == pytest.approx((25.0, 27.5))
    assert seen[1] == pytest.approx((27.5, 30.25))
    steps = [after for _, after in seen]
    assert steps[13] is not None and steps[13] < 100.0
    assert steps[14:] == [100.0] * 6


def test_throttled_again_restarts_the_quiet_spell() -> None:
    time = FakeTime(REAL_START)
    limiter = make_limiter(Rate(100, 1.0), time)
    limiter.throttled()
    time.advance(4.0)
    limiter.throttled()  # within the quiet spell: no halving, but no quiet either

    time.advance(limiter_module.QUIET_SPELL - 1.0)
    limiter.delay(time.now)

    assert limiter.current_rate == pytest.approx(25.0)


def test_unlimited_adapts_to_the_observed_rate_then_returns_to_unlimited() -> None:
    time = FakeTime(100.0)
    limiter = make_limiter(None, time)

    async def scenario() -> tuple[float | None, list[float]]:
        for _ in range(30):  # 30 sends within second 100
            await limiter.acquire()
            time.advance(1 / 30)
        time.now = 101.5
        limiter.throttled()
        return limiter.current_rate, await acquire_times(limiter, time, 31)

    adapted, times = asyncio.run(scenario())
    recoveries = 0
    while limiter.current_rate is not None and recoveries < 100:
        time.advance(limiter_module.QUIET_SPELL)
        limiter.delay(time.now)
        recoveries += 1

    assert adapted == pytest.approx(15.0)
    assert mean_rate(times) == pytest.approx(15.0, rel=0.01)
    assert recoveries == 22  # 0.5 * 1.1**22 > 4: back to unlimited
    assert limiter.current_rate is None
