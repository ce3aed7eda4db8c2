"""Which fault a request gets, and the transport-level faults themselves.

Two sources of faults, both deterministic:

- *markers* in the prompt, ``[[mock:FAULT]]`` or ``[[mock:FAULT*N]]``: the first N requests
  carrying that exact prompt get FAULT, later ones are served normally. Several markers in one
  prompt run in order, so ``[[mock:503]] [[mock:reset]]`` scripts "503, then a reset, then
  success". ``N`` may be ``inf`` or ``always``. ``[[mock:perday]]`` defaults to always (an
  exhausted day quota does not come back on the next try). ``download_fail*N`` is not part of
  the sequence: it fails the first N downloads of that prompt's result URLs.
- *rates*: one ``random.Random(seed)`` draw per generation request, walked through the rate
  fields in a fixed order, so a seed replays the same fault sequence for the same request order.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from dataclasses import dataclass

from aiohttp import web

from .config import FAULT_NAMES, RATE_FIELDS, MockConfig

_MARKER = re.compile(r"\[\[mock:([A-Za-z0-9_]+)(?:\*([A-Za-z0-9.]+))?\]\]")
_ALWAYS = {"inf", "always"}


@dataclass(frozen=True)
class Marker:
    """One ``[[mock:...]]`` marker: the fault and how many requests it applies to."""

    fault: str
    count: float


def parse_markers(prompt: str) -> list[Marker]:
    """The markers in a prompt, in order; ``ValueError`` names a misspelt one.

    A typo in a marker is an error rather than ignored text, so a test that means to inject a
    fault cannot silently pass without one.
    """
    if "[[mock:" not in prompt:
        return []
    markers = []
    for match in _MARKER.finditer(prompt):
        fault, count_text = match.group(1).lower(), match.group(2)
        if fault not in FAULT_NAMES:
            raise ValueError(
                f"unknown mock fault marker {match.group(0)!r}; known: {', '.join(sorted(FAULT_NAMES))}"
            )
        if count_text is None:
            count = math.inf if fault == "perday" else 1.0
        elif count_text.lower() in _ALWAYS:
            count = math.inf
        elif count_text.isdigit():
            count = float(int(count_text))
        else:
            raise ValueError(
                f"bad count in mock fault marker {match.group(0)!r}: use a whole number, inf or always"
            )
        markers.append(Marker(fault, count))
    if not markers:
        raise ValueError("malformed mock fault marker: write [[mock:FAULT]] or [[mock:FAULT*N]]")
    return markers


class FaultBook:
    """Per-prompt marker counters and the seeded random draws."""

    def __init__(self, seed: int | None) -> None:
        self._seed = seed
        self.rng = random.Random(seed)
        #: Separate stream for latency jitter, so turning jitter on does not shift fault draws.
        self.jitter_rng = random.Random(None if seed is None else seed + 1)
        self._generations: dict[str, int] = {}
        self._downloads: dict[str, int] = {}

    def follow_seed(self, seed: int | None) -> None:
        """Reseed when the live config's seed changed since the last request."""
        if seed != self._seed:
            self._seed = seed
            self.rng = random.Random(seed)
            self.jitter_rng = random.Random(None if seed is None else seed + 1)

    def clear(self) -> None:
        self._generations.clear()
        self._downloads.clear()

    def marker_fault(self, prompt: str, markers: list[Marker]) -> str | None:
        """The fault this request gets from the prompt's markers, counting it as seen."""
        sequence = [m for m in markers if m.fault != "download_fail"]
        if not sequence:
            return None
        seen = self._generations.get(prompt, 0)
        self._generations[prompt] = seen + 1
        for marker in sequence:
            if seen < marker.count:
                return marker.fault
            seen -= int(marker.count)
        return None

    def download_fault(self, prompt: str, markers: list[Marker]) -> bool:
        """Whether this download of one of the prompt's result URLs fails (``download_fail``)."""
        limit = sum(m.count for m in markers if m.fault == "download_fail")
        if not limit:
            return False
        seen = self._downloads.get(prompt, 0)
        if seen >= limit:
            return False
        self._downloads[prompt] = seen + 1
        return True

    def random_fault(self, config: MockConfig) -> str | None:
        """One draw against the configured rates; ``None`` means serve normally."""
        draw = self.rng.random()
        edge = 0.0
        for name in RATE_FIELDS:
            edge += getattr(config, name)
            if draw < edge:
                return name[len("rate_") :]
        return None

    def latency_s(self, config: MockConfig) -> float:
        """This request's artificial latency: ``latency_ms`` ± uniform ``jitter_ms``, never negative."""
        delay = config.latency_ms
        if config.jitter_ms:
            delay += self.jitter_rng.uniform(-config.jitter_ms, config.jitter_ms)
        return max(0.0, delay) / 1000.0


def reset_connection(request: web.BaseRequest) -> web.Response:
    """Drop the TCP connection without an HTTP answer.

    The returned response is never sent: aiohttp's write to the closed transport fails with a
    ``ConnectionError``, which it treats as "client went away" and does not log as an error.
    """
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=500)


async def send_truncated(request: web.BaseRequest, body: bytes, content_type: str) -> web.StreamResponse:
    """Announce the full ``Content-Length``, send only the first half, then close."""
    response = web.StreamResponse(status=200)
    response.content_type = content_type
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    transport = request.transport
    if transport is not None:
        transport.close()  # close() flushes the half already written, then ends the connection
    return response  # aiohttp's write_eof now fails quietly on the closed transport


async def hang(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` (or until the server stops); return True if the server is stopping.

    Waiting on the server's stop event rather than plain sleeping lets shutdown finish at once
    instead of waiting out an hour-long hang.
    """
    if stopping.is_set():
        return True
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        return False
    return True


class FaultWindows:
    """Fault windows a test opens and closes, or counts in requests — never in seconds.

    - ``outage``: ``"open"`` answers every generation request 503 until ``"closed"``; a whole
      number ``N`` answers the next N generation requests 503.
    - ``hold``: ``True`` keeps every admitted generation request waiting (no answer) until
      ``False``; ``hold_after=N`` lets the next N through first, then holds.  ``held`` is how
      many are waiting now, so a test can wait for "4 requests in flight" instead of sleeping.

    Set through ``POST /_mock/faults`` (or ``MockServerThread.faults``); each answer reports
    :meth:`snapshot`.
    """

    def __init__(self) -> None:
        self.outage_open = False
        self.outage_left = 0
        self.holding = False
        self.pass_before_hold = 0
        self.held = 0
        self._released = asyncio.Event()
        self._released.set()

    def apply(self, changes: dict[str, object]) -> dict[str, object]:
        """Validate every change first, then apply them; return :meth:`snapshot`."""
        known = {"outage", "hold", "hold_after"}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault window {unknown[0]!r}; known: {', '.join(sorted(known))}")
        outage = changes.get("outage")
        if "outage" in changes and outage not in ("open", "closed") and not _count(outage):
            raise ValueError(f'outage must be "open", "closed" or a whole number of requests, got {outage!r}')
        if "hold" in changes and not isinstance(changes["hold"], bool):
            raise ValueError(f"hold must be true or false, got {changes['hold']!r}")
        if "hold_after" in changes and not _count(changes["hold_after"]):
            raise ValueError(f"hold_after must be a whole number of requests, got {changes['hold_after']!r}")
        if "outage" in changes:
            self.outage_open = outage == "open"
            self.outage_left = outage if isinstance(outage, int) else 0
        if "hold_after" in changes:
            self.holding, self.pass_before_hold = True, int(changes["hold_after"])  # type: ignore[call-overload]
            self._released.clear()
        if "hold" in changes:
            self.holding, self.pass_before_hold = bool(changes["hold"]), 0
            if self.holding:
                self._released.clear()
            else:
                self._released.set()
        return self.snapshot()

    def snapshot(self) -> dict[str, object]:
        return {
            "outage": "open" if self.outage_open else self.outage_left or "closed",
            "hold": self.holding,
            "held": self.held,
        }

    def outage(self) -> bool:
        """Whether this generation request falls in an outage window (counting it if counted)."""
        if self.outage_open:
            return True
        if self.outage_left > 0:
            self.outage_left -= 1
            return True
        return False

    async def wait_if_held(self, stopping: asyncio.Event) -> None:
        """Wait while requests are held (or until the server stops); a cancelled client frees it."""
        if not self.holding:
            return
        if self.pass_before_hold > 0:
            self.pass_before_hold -= 1
            return
        self.held += 1
        try:
            released, stop = asyncio.ensure_future(self._released.wait()), asyncio.ensure_future(stopping.wait())
            try:
                await asyncio.wait({released, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                released.cancel()
                stop.cancel()
        finally:
            self.held -= 1


def _count(value: object) -> bool:
    """A whole number of requests (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
