"""Per-key request accounting: the per-minute sliding window and the per-day success count.

Keys are never stored: callers pass an opaque key id (a hash of the API key), so nothing the
mock can print or serve ever contains a secret.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 60.0


class RateWindow:
    """A sliding 60 s window of request arrival times per key.

    Usage::

        window = RateWindow()
        delay = window.admit("key-id", limit=10, now=time.monotonic())
        if delay is not None:
            ...  # answer 429; retry in `delay` seconds

    Only admitted requests are counted, so a client that keeps hammering through its 429s is
    let back in as soon as the oldest admitted request leaves the window, as with the real API.
    """

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._arrivals: dict[str, deque[float]] = {}

    def admit(self, key_id: str, limit: int, now: float) -> float | None:
        """Count this arrival and return ``None``, or return the seconds until a slot frees."""
        arrivals = self._arrivals.setdefault(key_id, deque())
        horizon = now - self.window_s
        while arrivals and arrivals[0] <= horizon:
            arrivals.popleft()
        if len(arrivals) >= limit:
            if not arrivals:  # limit 0: nothing will ever get through; say "a minute"
                return self.window_s
            return max(0.0, arrivals[0] + self.window_s - now)
        arrivals.append(now)
        return None

    def release(self, key_id: str, arrival: float) -> None:
        """Forget an admitted arrival whose request was answered 429 after all (a marker)."""
        arrivals = self._arrivals.get(key_id)
        if arrivals is not None:
            try:
                arrivals.remove(arrival)
            except ValueError:
                pass

    def clear(self) -> None:
        self._arrivals.clear()


class DailyCounter:
    """Successful generations per key; past the quota every request gets the per-day 429."""

    def __init__(self) -> None:
        self._successes: dict[str, int] = {}

    def exhausted(self, key_id: str, quota: int) -> bool:
        return self._successes.get(key_id, 0) >= quota

    def record_success(self, key_id: str) -> None:
        self._successes[key_id] = self._successes.get(key_id, 0) + 1

    def clear(self) -> None:
        self._successes.clear()
