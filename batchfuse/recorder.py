"""Getting finished attempts into the store without blocking the event loop.

:class:`Database` runs store calls on one worker thread.  :class:`Recorder` commits finished
attempts in groups: one transaction for whatever finished while the previous one was
committing, so a busy run makes few commits and a quiet one commits at once.  Each item waits
for its own commit: nothing counted as done lives only in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from batchfuse.errors import BatchfuseError, StoreError
from batchfuse.store.queries import Store
from batchfuse.store.records import AttemptRecord

T = TypeVar("T")


class Database:
    """Runs store calls on one worker thread, so the event loop never blocks on SQL."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batchfuse-db")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Recorder:
    """Group commit of finished attempts.

    After the first attempt of a group arrives, the recorder lingers ``linger_s`` (or until
    ``max_group`` are waiting) so that a busy run commits groups rather than single attempts:
    a group costs about as much as one.  What waits in a group is never lost to a crash in a
    way that costs money: its outputs are already on disk and the next run adopts them.
    """

    def __init__(
        self, db: Database, run_id: int, runner_id: str, lease_s: float, linger_s: float = 0.025, max_group: int = 256
    ) -> None:
        self.db, self.run_id, self.runner_id, self.lease_s = db, run_id, runner_id, lease_s
        self.linger_s, self.max_group = linger_s, max_group
        self.commits = 0
        self._queue: list[tuple[AttemptRecord, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._task = asyncio.create_task(self._loop(), name="batchfuse-recorder")

    async def submit(self, record: AttemptRecord) -> bool:
        """Record ``record``; returns False if the item's lease had been lost."""
        if self._closed:
            raise StoreError("the run's recorder is closed")
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((record, fut))
        self._wake.set()
        return await asyncio.shield(fut)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._queue and not self._closed and len(self._queue) < self.max_group:
                await asyncio.sleep(self.linger_s)
            batch, self._queue = self._queue, []
            if not batch and self._closed:
                return
            if not batch:
                continue
            try:
                lost = set(
                    await self.db.call(self.db.store.record, self.run_id, self.runner_id, [r for r, _ in batch], self.lease_s)
                )
            except BaseException as exc:  # the database failed: every waiter hears it
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc if isinstance(exc, BatchfuseError) else StoreError(str(exc)))
                if not isinstance(exc, Exception):
                    raise
                continue
            self.commits += 1
            for rec, fut in batch:
                if not fut.done():
                    fut.set_result(rec.item_id not in lost)

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        await self._task
