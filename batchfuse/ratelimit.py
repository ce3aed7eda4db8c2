"""Keeping to ``requests_per_minute``.

Requests are *paced* on an ideal schedule — one slot every ``interval`` — and each waits for
its own slot, rather than all polling a sliding window that would release them in bursts at
its edges.  A wake-up that comes a little late does not push the whole schedule back (the
next slot stays where it was), or the achieved rate would fall a percent or two short.
asyncio-throttle's window is the burst guard underneath: never two requests closer than half
an interval.  A server counting a sliding minute at arrival sees requests whose spacing
jitters with latency, so we aim a little under the limit (``HEADROOM``).

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

from asyncio_throttle import Throttler

HEADROOM = 0.98


class RateLimiter:
    def __init__(self, requests_per_minute: float | None, headroom: float = HEADROOM) -> None:
        self.headroom = headroom
        self._lock = asyncio.Lock()
        self._next = 0.0
        self._hold_until = 0.0
        self._throttler: Throttler | None = None
        self.set_rate(requests_per_minute)

    @property
    def requests_per_minute(self) -> float | None:
        return self._rpm

    def set_rate(self, requests_per_minute: float | None) -> None:
        """Change the rate; takes effect from the next request."""
        self._rpm = requests_per_minute
        if requests_per_minute is None:
            self._throttler = None
            self.interval = 0.0
            return
        self.interval = 60.0 / (requests_per_minute * self.headroom)
        if self._throttler is None:
            self._throttler = Throttler(rate_limit=1, period=self.interval / 2, retry_interval=0.001)
        else:
            self._throttler.period = self.interval / 2

    def hold(self, seconds: float) -> None:
        """Start no request for ``seconds`` (the longest hold wins)."""
        self._hold_until = max(self._hold_until, time.monotonic() + seconds)

    async def acquire(self) -> None:
        if self._throttler is None and self._hold_until <= time.monotonic():
            return
        async with self._lock:
            now = time.monotonic()
            if self._hold_until > now:
                await asyncio.sleep(self._hold_until - now)
                now = time.monotonic()
                self._next = now
            if self._throttler is None:
                return
            if self._next < now - self.interval:  # idle for a while: no credit beyond one slot
                self._next = now
            if self._next > now:
                await asyncio.sleep(self._next - now)
            await self._throttler.acquire()
            self._next += self.interval

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
