"""Keeping to ``requests_per_minute``.

asyncio-throttle's sliding window is the hard guarantee (never more than one request per
interval).  On top of it requests are *paced*: each waits for its own slot instead of all
polling the window, which would release them in bursts at its edges.  A server counting a
sliding minute at arrival sees requests whose spacing jitters with latency, so we aim a
little under the limit (``HEADROOM``) rather than exactly at it.

Example::

    limiter = RateLimiter(requests_per_minute=600)
    async with limiter:
        await send()
"""

from __future__ import annotations

import asyncio
import time

from asyncio_throttle import Throttler

HEADROOM = 0.98


class RateLimiter:
    def __init__(self, requests_per_minute: float | None, headroom: float = HEADROOM) -> None:
        self.headroom = headroom
        self._lock = asyncio.Lock()
        self._next = 0.0
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
        # The window is a hair shorter than the pacing interval so that a request woken at
        # its slot passes the window at once instead of polling it.
        period = self.interval * 0.99
        if self._throttler is None:
            self._throttler = Throttler(rate_limit=1, period=period, retry_interval=0.001)
        else:
            self._throttler.period = period

    async def acquire(self) -> None:
        if self._throttler is None:
            return
        async with self._lock:
            wait = self._next - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._throttler.acquire()
            self._next = max(self._next, time.monotonic()) + self.interval

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        return None
