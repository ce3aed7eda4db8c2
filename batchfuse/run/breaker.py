"""The outage breaker: when the API is down, pause instead of spending every item's attempts.

Closed (normal) until ``threshold`` transient failures in a row, spread over at least
``min_items`` different items, open it: nothing is sent for ``delay`` seconds; then one probe
request goes out (half-open).  A success closes the breaker; a failure opens it again for
twice as long, up to ``max_delay``.  Any success resets the count.

Example::

    breaker = Breaker()
    await breaker.wait()          # before sending; returns at once while closed
    breaker.record(ok=False, item="sku-1")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Breaker:
    def __init__(
        self,
        threshold: int = 10,
        min_items: int = 3,
        first_delay: float = 5.0,
        max_delay: float = 300.0,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.threshold, self.min_items = threshold, min_items
        self.first_delay, self.max_delay = first_delay, max_delay
        self.on_change = on_change or (lambda message: None)
        self.failures = 0
        self._items: set[str] = set()
        self.delay = first_delay
        self.open_until: float | None = None
        self._probing = False
        self.pauses = 0

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    async def wait(self, stop: asyncio.Event | None = None) -> None:
        """Return when a request may be sent (or ``stop`` is set); while open, only one probe
        at a time passes."""
        while self.open_until is not None and not (stop is not None and stop.is_set()):
            wait = self.open_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, 1.0))
                continue
            if not self._probing:
                self._probing = True
                return
            await asyncio.sleep(0.2)

    def record(self, ok: bool, item: str) -> None:
        """The outcome of a request (transient failures only count as not ok)."""
        probe, self._probing = self._probing, False
        if ok:
            if self.open_until is not None:
                self.on_change(f"API answers again; resuming after {self.pauses} pause(s)")
            self.failures, self.open_until, self.delay = 0, None, self.first_delay
            self._items.clear()
            return
        self.failures += 1
        self._items.add(item)
        if probe:
            self.delay = min(self.max_delay, self.delay * 2)
            self._open()
        elif self.open_until is None and self.failures >= self.threshold and len(self._items) >= self.min_items:
            self._open()

    def _open(self) -> None:
        self.pauses += 1
        self.open_until = time.monotonic() + self.delay
        self.on_change(
            f"API failing ({self.failures} transient errors in a row); pausing {self.delay:.0f} s before a probe"
        )
