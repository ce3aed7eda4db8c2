"""Keeping to ``requests_per_minute``.

aiolimiter's leaky bucket does the pacing.  It is set to hold two request intervals: a request
whose wake-up comes a little late leaves the next one its slot (the schedule is kept, rather than
restarted from each late wake-up, which would lose a percent or two of the rate), and after an
idle spell at most two go back to back.  A bucket as large as the server's minute would let a
whole minute's worth out at once, and one that holds a single interval falls short by its late
wake-ups: bench/RESULTS.md, "Rate precision: pacer against the libraries".  A server counting a
sliding minute at arrival sees requests whose spacing jitters with latency, so we aim a little
under the limit (``HEADROOM``).

``hold(seconds)`` stops every request for a while: a 429 that says when to come back speaks
for the whole key, not just for the request that drew it.

Example::

    limiter = RateLimiter(requests_per_minute=600)
    async with limiter:
        await send()
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from aiolimiter import AsyncLimiter

HEADROOM = 0.98
#: How many request intervals the bucket holds (see the module's docstring).
SLOTS = 2


class RateLimiter:
    """One request every ``interval`` (60 / (requests_per_minute × headroom)) for all callers.

    The bucket is counted in seconds of schedule: it drains one second per second and each
    request fills it by ``interval``, so :meth:`set_rate` only changes what a request costs and
    how much the bucket holds, keeping what it holds now (a new bucket would start empty and let
    two out at once on every change).  The request after a change keeps the slot the old rate
    gave it, and the new spacing starts from there.
    """

    def __init__(self, requests_per_minute: float | None, headroom: float = HEADROOM) -> None:
        self.headroom = headroom
        self._lock = asyncio.Lock()
        self._hold_until = 0.0
        self._bucket: AsyncLimiter | None = None
        self._last_interval = 0.0
        self.set_rate(requests_per_minute)

    @property
    def requests_per_minute(self) -> float | None:
        return self._rpm

    def set_rate(self, requests_per_minute: float | None) -> None:
        """Change the rate; takes effect from the next request."""
        self._rpm = requests_per_minute
        if requests_per_minute is None:
            self._bucket = None
            self.interval = 0.0
            return
        self.interval = 60.0 / (requests_per_minute * self.headroom)
        if self._bucket is None:
            size = SLOTS * self.interval
            self._bucket = AsyncLimiter(size, size)  # drains max_rate / time_period = 1 s per second
            self._last_interval = self.interval

    def hold(self, seconds: float) -> None:
        """Start no request for ``seconds`` (the longest hold wins)."""
        self._hold_until = max(self._hold_until, time.monotonic() + seconds)

    async def acquire(self) -> None:
        if self._bucket is None and self._hold_until <= time.monotonic():
            return
        async with self._lock:  # one caller at a time in the bucket: a new rate applies to the next
            now = time.monotonic()
            if self._hold_until > now:
                await asyncio.sleep(self._hold_until - now)
            bucket, interval = self._bucket, self.interval
            if bucket is not None:
                # a new rate is applied here, between two requests, never under a waiting one;
                # this request's slot is one *previous* interval after the last: wait until the
                # bucket is down to that, then fill it up (at an unchanged rate: one interval)
                bucket.max_rate = bucket.time_period = SLOTS * interval
                await bucket.acquire(max(0.0, SLOTS * interval - self._last_interval))
                self._last_interval = interval

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        return None


class Gate:
    """A concurrency limit that can be lowered and raised while requests are in flight
    (a semaphore whose size changes)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._changed = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_use < self.limit)
            self.in_use += 1

    async def release(self) -> None:
        async with self._changed:
            self.in_use -= 1
            self._changed.notify_all()

    async def set_limit(self, limit: int) -> None:
        async with self._changed:
            self.limit = max(1, limit)
            self._changed.notify_all()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class AdaptiveLimits:
    """Additive increase, multiplicative decrease of the request rate and concurrency.

    A 429 although we keep the configured rate means the real limit is lower (or shared):
    cut the rate and concurrency by ``DECREASE`` — once per round trip, like TCP: a 429 for a
    request sent before the last cut says nothing new, so it is ignored — then climb back by
    one request/minute per success, never above what the manifest configured.  Without a
    configured rate, the first cut starts from the rate actually sent over the last ten seconds.
    """

    DECREASE = 0.85

    def __init__(self, limiter: RateLimiter, gate: Gate, rpm: float | None, concurrency: int) -> None:
        self.limiter, self.gate = limiter, gate
        self.max_rpm, self.max_concurrency = rpm, concurrency
        self._seq = 0
        self._cut_at = -1
        self._sent: deque[float] = deque(maxlen=4096)
        self._successes = 0
        self.cuts = 0

    def sent(self) -> int:
        """Note a request going out; returns its sequence number for :meth:`throttled`."""
        self._seq += 1
        self._sent.append(time.monotonic())
        return self._seq

    def _recent_rpm(self) -> float:
        now = time.monotonic()
        return max(1.0, sum(1 for t in self._sent if now - t <= 10.0) * 6.0)

    async def throttled(self, seq: int) -> bool:
        """Request ``seq`` came back 429; returns whether the limits were cut."""
        if seq <= self._cut_at:
            return False
        self._cut_at = self._seq
        self.cuts += 1
        current = self.limiter.requests_per_minute or self._recent_rpm()
        self.limiter.set_rate(max(1.0, current * self.DECREASE))
        await self.gate.set_limit(max(1, int(self.gate.limit * self.DECREASE)))
        self._successes = 0
        return True

    async def succeeded(self) -> None:
        """Climb back: +1 request/minute per success, +1 in flight per ``limit`` successes."""
        rpm = self.limiter.requests_per_minute
        if rpm is not None and self.cuts:
            ceiling = self.max_rpm if self.max_rpm is not None else float("inf")
            if rpm < ceiling:
                self.limiter.set_rate(min(ceiling, rpm + 1.0))
        self._successes += 1
        if self.gate.limit < self.max_concurrency and self._successes >= self.gate.limit:
            self._successes = 0
            await self.gate.set_limit(self.gate.limit + 1)
