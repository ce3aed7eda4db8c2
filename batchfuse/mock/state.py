"""The mock's memory, shared by both wire formats: config, request log, counters, caches, results.

The admission steps every generation request goes through live here too, so the Gemini and
OpenAI handlers differ only in how they parse requests and render answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .config import MockConfig
from .faults import FaultBook, FaultWindows, Marker, hang, reset_connection, send_truncated
from .images import ImageMaker, ReferenceDecoder, RenderedImage
from .limits import DailyCounter, RateWindow

#: Oldest entries are dropped past this many, so a long benchmark cannot eat all memory.
LOG_MAX_ENTRIES = 200_000
#: Most result URLs kept alive at once (OpenAI ``url`` replies).
RESULTS_MAX = 100_000


class RequestLog(list):  # type: ignore[type-arg]
    """The request log: a plain list of dicts (index, slice, ``len``) that trims its oldest half."""

    def __init__(self, max_entries: int = LOG_MAX_ENTRIES) -> None:
        super().__init__()
        self.max_entries = max_entries

    def append(self, entry: dict[str, Any]) -> None:  # type: ignore[override]
        super().append(entry)
        if len(self) > self.max_entries:
            del self[: len(self) // 2]


@dataclass
class StoredResult:
    """One OpenAI result image behind a URL until ``expires_at`` (monotonic)."""

    image: RenderedImage
    prompt: str
    model: str
    markers: list[Marker]
    expires_at: float


class ResultStore:
    """Result images by random id, in creation order so expired ones are pruned from the front.

    The ids of expired results are remembered (as many as results), so an expired link answers
    "expired" (403, as signed links do) while an id that never existed answers "not found".
    """

    def __init__(self) -> None:
        self._items: OrderedDict[str, StoredResult] = OrderedDict()
        self._expired: OrderedDict[str, None] = OrderedDict()

    def add(self, result: StoredResult) -> str:
        now = time.monotonic()
        while self._items and (
            len(self._items) >= RESULTS_MAX or next(iter(self._items.values())).expires_at <= now
        ):
            self._retire(next(iter(self._items)))
        result_id = secrets.token_urlsafe(12)
        self._items[result_id] = result
        return result_id

    def get(self, result_id: str) -> StoredResult | None:
        """The live result, or ``None`` if unknown or expired (:meth:`has_expired` tells which)."""
        result = self._items.get(result_id)
        if result is None:
            return None
        if result.expires_at <= time.monotonic():
            self._retire(result_id)
            return None
        return result

    def has_expired(self, result_id: str) -> bool:
        return result_id in self._expired

    def expire_all(self) -> None:
        """Every result made so far expires now (``POST /_mock/faults {"expire_results": true}``)."""
        for result_id in list(self._items):
            self._retire(result_id)

    def _retire(self, result_id: str) -> None:
        del self._items[result_id]
        self._expired[result_id] = None
        while len(self._expired) > RESULTS_MAX:
            self._expired.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()
        self._expired.clear()


@dataclass(frozen=True)
class Admission:
    """The gate's verdict for one generation request: a fault name, or ``None`` to serve it.

    Gate-made faults are ``"outage"`` (503), ``"rpm"`` (per-minute 429, with ``retry_after``)
    and ``"perday"``; the rest come from markers or the random rates.
    """

    fault: str | None
    retry_after: float | None = None


class MockState:
    """Everything one running mock remembers; one per :func:`create_app`."""

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.log = RequestLog()
        self.faults = FaultBook(config.seed)
        self.windows = FaultWindows()
        self.rate_window = RateWindow()
        self.daily = DailyCounter()
        self.references = ReferenceDecoder()
        self.images = ImageMaker()
        self.results = ResultStore()
        #: Set when the app shuts down, to release hanging handlers at once.
        self.stopping = asyncio.Event()

    def reset(self) -> None:
        """Forget the log, marker counters, rate windows, day counts and result URLs."""
        self.log.clear()
        self.faults.clear()
        self.rate_window.clear()
        self.daily.clear()
        self.results.clear()

    # -- log --------------------------------------------------------------------------------

    def begin(self, request: web.BaseRequest, api: str, model: str | None = None) -> dict[str, Any]:
        """A log entry for a request, filled in by the handler and appended by :meth:`record`
        (``received``: when the request arrived; ``t``: when it was answered).

        ``path`` is the path only: a ``?key=`` query must never reach the log.
        """
        return {
            "t": None,
            "received": time.time(),
            "method": request.method,
            "path": request.path,
            "api": api,
            "model": model,
            "status": None,
            "fault": None,
            "prompt": None,
            "n_images": 0,
            "key_ok": False,
        }

    def record(self, entry: dict[str, Any], status: int | None, fault: str | None = None) -> None:
        entry["t"] = time.time()
        entry["status"] = status
        entry["fault"] = fault
        self.log.append(entry)

    def finish(
        self, entry: dict[str, Any], response: web.StreamResponse, fault: str | None = None
    ) -> web.StreamResponse:
        """Record the entry with the response's status and hand the response back."""
        self.record(entry, response.status, fault)
        return response

    # -- keys and admission -----------------------------------------------------------------

    def check_key(self, key: str | None) -> str:
        """``"ok"``, ``"missing"`` or ``"wrong"`` for a presented API key."""
        if key is None or not key.strip():
            return "missing"
        expected = self.config.api_key
        if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
            return "wrong"
        return "ok"

    @staticmethod
    def key_id(key: str) -> str:
        """An opaque stand-in for a key in the per-key counters, so the key itself is never kept."""
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def admit(self, key_id: str, prompt: str, markers: list[Marker], arrival: float) -> Admission:
        """Outage, per-minute window, day quota, prompt markers, random rates — in that order."""
        config = self.config
        if (config.outage_until is not None and arrival < config.outage_until) or self.windows.outage():
            return Admission("outage")
        if config.rpm_limit is not None:
            self.rate_window.window_s = config.rpm_window_s
            delay = self.rate_window.admit(key_id, config.rpm_limit, arrival)
            if delay is not None:
                return Admission("rpm", retry_after=delay)
        if config.daily_quota is not None and self.daily.exhausted(key_id, config.daily_quota):
            self._uncount(key_id, arrival)
            return Admission("perday")
        self.faults.follow_seed(config.seed)
        fault = self.faults.marker_fault(prompt, markers) if markers else None
        if fault is None:
            fault = self.faults.random_fault(config)
        if fault in ("429", "perday"):
            self._uncount(key_id, arrival)  # rejected with 429: does not count into the window
        return Admission(fault, retry_after=1.0 if fault == "429" else None)

    def _uncount(self, key_id: str, arrival: float) -> None:
        if self.config.rpm_limit is not None:
            self.rate_window.release(key_id, arrival)

    async def deliver(
        self,
        request: web.Request,
        entry: dict[str, Any],
        fault: str | None,
        key_id: str,
        success: Callable[[], Awaitable[web.Response]],
    ) -> web.StreamResponse:
        """A generation's answer once no fault replaced it: the transport faults (a reset, a hang
        until the client gives up, a reply cut off halfway) or ``success()``'s reply, counted."""
        if fault == "reset":
            self.record(entry, None, fault)
            return reset_connection(request)
        if fault == "hang":
            self.record(entry, None, fault)
            if await hang(self.stopping, self.config.hang_s):
                return reset_connection(request)
            return await success()  # already logged as the hang
        response = await success()
        if fault == "truncate":
            assert isinstance(response.body, bytes)
            self.record(entry, 200, fault)
            return await send_truncated(request, response.body, "application/json")
        self.daily.record_success(key_id)
        return self.finish(entry, response)

    async def sleep_latency(self) -> None:
        await self.windows.wait_if_held(self.stopping)
        delay = self.faults.latency_s(self.config)
        if delay > 0:
            await asyncio.sleep(delay)


STATE_KEY = web.AppKey("batchfuse_mock_state", MockState)


def state_of(request: web.Request) -> MockState:
    """The :class:`MockState` of the app serving ``request``."""
    return request.app[STATE_KEY]
