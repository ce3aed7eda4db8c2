"""``GET /api/events``: server-sent events while the review page is open.

One poller per server reads a cheap fingerprint of the job from the store (the newest item
update, verdict, attempt and kept version) every ``interval_s``; when it moves, every open
stream gets one ``change`` event with the new counts and the keys that changed, and the page
reloads what it shows.  A quiet job costs one small query per interval, whoever is watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from batchfuse.review.api import CONTEXT, ReviewContext
from batchfuse.store.verdicts import change_marker, changed_keys, verdict_counts

#: How often the store is looked at (seconds).
POLL_S = 0.5
#: A comment line this often keeps proxies and the browser from closing an idle stream.
KEEPALIVE_S = 15.0


class Events:
    """The poller and its listeners (one queue per open stream)."""

    def __init__(self, ctx: ReviewContext, interval_s: float = POLL_S) -> None:
        self.ctx = ctx
        self.interval_s = interval_s
        self.listeners: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._task: asyncio.Task[None] | None = None

    def _snapshot(self, since: float) -> tuple[tuple[Any, ...], dict[str, Any]]:
        ctx = self.ctx
        marker = change_marker(ctx.store, ctx.job)
        return marker, {
            "counts": ctx.store.shown_counts(ctx.job),
            "verdicts": verdict_counts(ctx.store, ctx.job),
            "changed": changed_keys(ctx.store, ctx.job, since),
        }

    async def _poll(self) -> None:
        marker = await asyncio.to_thread(change_marker, self.ctx.store, self.ctx.job)
        since = time.time()
        while True:
            await asyncio.sleep(self.interval_s)
            if not self.listeners:
                continue
            try:
                now = await asyncio.to_thread(change_marker, self.ctx.store, self.ctx.job)
                if now == marker:
                    continue
                started = time.time()
                marker, event = await asyncio.to_thread(self._snapshot, since - 1.0)
                since = started
            except Exception:  # a busy or briefly unreachable database: try again next time
                continue
            for queue in list(self.listeners):
                queue.put_nowait(event)

    async def start(self, _app: web.Application) -> None:
        self._task = asyncio.create_task(self._poll(), name="batchfuse-review-events")

    async def stop(self, _app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def close_streams(self, _app: web.Application) -> None:
        for queue in list(self.listeners):
            queue.put_nowait(None)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.listeners.add(queue)
        try:
            await response.write(b"retry: 2000\n: connected\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if event is None:  # the server is shutting down
                    break
                data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
                await response.write(f"event: change\ndata: {data}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.listeners.discard(queue)
        return response


EVENTS = web.AppKey("events", Events)


def add_routes(app: web.Application) -> None:
    events = Events(app[CONTEXT])
    app[EVENTS] = events
    app.on_startup.append(events.start)
    app.on_shutdown.append(events.close_streams)
    app.on_cleanup.append(events.stop)
    app.router.add_get("/api/events", events.stream)
