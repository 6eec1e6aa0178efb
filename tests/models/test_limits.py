import asyncio
import random
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest

from potstill.models.limits import RateLimiter, RetryPolicy, TokenBucket, parse_retry_after


def test_full_jitter_stays_under_a_doubling_ceiling_and_spreads() -> None:
    policy = RetryPolicy(attempts=8, base_s=0.5, max_wait_s=4.0)
    rng = random.Random(0)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (7, 4.0)]:
        delays = [policy.delay(attempt, None, rng) for _ in range(300)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling and min(delays) < 0.2 * ceiling


def test_retry_after_is_a_floor() -> None:
    policy = RetryPolicy(max_wait_s=1.0)
    rng = random.Random(1)
    delays = [policy.delay(1, 7.0, rng) for _ in range(100)]
    assert all(7.0 <= d <= 7.7 for d in delays)  # above the ceiling too: the server decides


def test_retry_after_headers() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    now = datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp()
    date = format_datetime(datetime(2030, 1, 1, 0, 0, 30, tzinfo=timezone.utc), usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == 30.0


class FakeClock:
    """A clock that only `asyncio.sleep` moves: the limiter's waits, exactly, no wall time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        monkeypatch.setattr(asyncio, "sleep", self.sleep)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        # At least a nanosecond, as a real clock ticks: a wait of 1e-17 s (float rounding in
        # a bucket's refill) would otherwise leave the time as it was, for ever.
        self.now += max(seconds, 1e-9)

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_are_spread_evenly(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(monkeypatch)

    async def run() -> list[float]:
        limiter = RateLimiter(requests_per_minute=1200, clock=clock)  # 20 per second
        stamps = []
        for _ in range(30):
            await limiter.acquire(0)
            stamps.append(clock())
        return stamps

    stamps = asyncio.run(run())
    # A burst of one second's worth is allowed (20 requests at once), then one every 1/20 s.
    assert stamps[:20] == [0.0] * 20
    assert stamps[20:] == pytest.approx([(k + 1) / 20 for k in range(10)])


def test_tokens_per_minute_wait_for_large_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    bucket = TokenBucket(rate=100.0, capacity=100.0, clock=lambda: clock[0])

    async def run() -> None:
        await bucket.take(100)  # the full bucket
        await bucket.take(50)  # half a second's refill
        await bucket.take(500)  # more than the bucket holds: goes once it is full

    asyncio.run(run())
    assert slept == [0.5, 1.0]


def test_a_pause_holds_every_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(monkeypatch)

    async def run() -> list[float]:
        limiter = RateLimiter(clock=clock)
        limiter.pause(0.3)
        limiter.pause(0.1)  # a shorter pause never cuts a longer one short
        done: list[float] = []

        async def call() -> None:
            await limiter.acquire(1)
            done.append(clock())

        await asyncio.gather(call(), call())
        return done

    assert asyncio.run(run()) == pytest.approx([0.3, 0.3])
