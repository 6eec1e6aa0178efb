"""Good manners towards an endpoint: retry back-off with full jitter, and rate limits."""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long one call is retried before it counts as failed."""

    attempts: int = 5  # requests in all, the first one included
    base_s: float = 0.5  # the back-off ceiling before the first retry; doubles per retry
    max_wait_s: float = 60.0  # the longest single wait
    total_s: float = 600.0  # the longest a call may take, from its first request to giving up

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """The wait before the next request, after `attempt` requests failed.

        Full jitter (uniform between 0 and an exponential ceiling) spreads retries of many
        concurrent calls; a server's Retry-After is a floor, with up to 10% spread on top.
        """
        if retry_after is not None:
            return retry_after * (1.0 + 0.1 * rng.random())
        ceiling = min(self.max_wait_s, self.base_s * 2 ** (attempt - 1))
        return rng.uniform(0.0, ceiling)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class TokenBucket:
    """`rate` units per second, bursting to `capacity`; `take` waits until enough are in."""

    def __init__(
        self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._level = capacity
        self._stamp = clock()
        self._lock = asyncio.Lock()  # waiters are served in arrival order

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, amount: float) -> None:
        # A request bigger than the bucket still goes, once the bucket is full.
        amount = min(amount, self.capacity)
        async with self._lock:
            self._refill()
            while self._level < amount:
                await asyncio.sleep((amount - self._level) / self.rate)
                self._refill()
            self._level -= amount


class RateLimiter:
    """Requests- and tokens-per-minute limits, and a pause every caller honours.

    Buckets hold about one second's worth, so the limit is kept smoothly rather than
    spent in a burst at the start of each minute (providers meter in short windows too).
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._requests = self._bucket(requests_per_minute, clock)
        self._tokens = self._bucket(tokens_per_minute, clock)
        self._paused_until = 0.0

    @staticmethod
    def _bucket(per_minute: float | None, clock: Callable[[], float]) -> TokenBucket | None:
        if per_minute is None:
            return None
        rate = per_minute / 60.0
        return TokenBucket(rate, max(1.0, rate), clock)

    def pause(self, seconds: float) -> None:
        """Hold every new request for `seconds` (a 429 with Retry-After speaks for the key)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def acquire(self, tokens: float) -> None:
        """Wait until one request of about `tokens` tokens may be sent."""
        while (wait := self._paused_until - self._clock()) > 0:
            await asyncio.sleep(wait)
        if self._requests is not None:
            await self._requests.take(1.0)
        if self._tokens is not None:
            await self._tokens.take(tokens)
