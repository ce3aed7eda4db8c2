"""The store as the runner awaits it: every call runs on one worker thread, so the event loop
never blocks on SQL (and SQLite sees a single writer thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from batchfuse.records import ClaimedItem, Job, SpooledImage
from batchfuse.store.queries import Store

T = TypeVar("T")


class AsyncStore:
    """Awaitable face of a :class:`Store`; :meth:`in_thread` runs other work (planning, a group
    commit that writes files first) on the same thread, in order with the store's calls."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.is_sqlite = store.is_sqlite
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batchfuse-db")

    async def in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def ensure_job(self, name: str, provider: str, model: str, manifest_path: str) -> Job:
        return await self.in_thread(self.store.ensure_job, name, provider, model, manifest_path)

    async def open_run(
        self, name: str, provider: str, model: str, manifest_path: str, *, exclusive: bool
    ) -> tuple[Job, int, str]:
        return await self.in_thread(self.store.open_run, name, provider, model, manifest_path, exclusive=exclusive)

    async def end_run(
        self, run_id: int, runner_id: str, reason: str, succeeded: int, failed: int, requests: int
    ) -> None:
        await self.in_thread(self.store.end_run, run_id, runner_id, reason, succeeded, failed, requests)

    async def output_token(self, job: Job, *, create: bool) -> str | None:
        return await self.in_thread(self.store.output_token, job, create=create)

    async def retry_failed(self, job: Job) -> int:
        return await self.in_thread(self.store.retry_failed, job)

    async def runnable_keys(self, job: Job, max_attempts: int) -> list[str]:
        return await self.in_thread(self.store.runnable_keys, job, max_attempts)

    async def counts(self, job: Job) -> dict[str, int]:
        return await self.in_thread(self.store.counts, job)

    async def claim(
        self,
        job: Job,
        runner_id: str,
        limit: int,
        lease_s: float,
        max_attempts: int,
        after_ordinal: int = -1,
        only_keys: list[str] | None = None,
    ) -> list[ClaimedItem]:
        return await self.in_thread(
            self.store.claim, job, runner_id, limit, lease_s, max_attempts, after_ordinal, only_keys
        )

    async def release(self, runner_id: str, item_ids: list[int]) -> None:
        await self.in_thread(self.store.release, runner_id, item_ids)

    async def heartbeat(self, run_id: int, runner_id: str, lease_s: float) -> None:
        await self.in_thread(self.store.heartbeat, run_id, runner_id, lease_s)

    async def live_runners(self, job: Job, stale_s: float) -> int:
        return await self.in_thread(self.store.live_runners, job, stale_s)

    async def held_by_others(self, job: Job, runner_id: str) -> int:
        return await self.in_thread(self.store.held_by_others, job, runner_id)

    async def spooled(self, item_id: int, spec_hash: str) -> list[SpooledImage]:
        return await self.in_thread(self.store.spooled, item_id, spec_hash)
