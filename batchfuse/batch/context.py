"""What the batch layer works with during one run (:class:`BatchContext`) and what it came to
(:class:`BatchOutcome`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from batchfuse.outputs.files import OutputFolder
from batchfuse.plan.manifest import BatchConfig
from batchfuse.providers.base import ProviderContext
from batchfuse.providers.batch_base import BatchBackend
from batchfuse.records import Job
from batchfuse.run.retry import RetryPolicy
from batchfuse.run.stats import RunStats
from batchfuse.store.aio import AsyncStore
from batchfuse.store.batches import BatchQueries

#: How often a waiting run looks whether it was asked to stop (seconds).
TICK_S = 0.1
#: How often a batch run proves it is alive (well under the store's 60 s staleness).
HEARTBEAT_S = 15.0


@dataclass
class BatchOutcome:
    """What the batch part of a run came to (the stages count into :attr:`BatchContext.outcome`)."""

    #: Items to run online now: the fallback's stragglers and items with a spooled result.
    online_keys: list[str] = field(default_factory=list)
    #: Of ``online_keys``, how many the fallback took out of their batches.
    fallback: int = 0
    #: The fallback came: everything runnable (the run's ``--only`` still holds) runs online now.
    online_all: bool = False
    #: Items still out in batches when the run ended (collected by a later run).
    out: int = 0
    batches_out: int = 0
    created: int = 0
    adopted: int = 0
    applied: int = 0
    uploads: int = 0
    unknown_lines: int = 0
    duplicate_lines: int = 0
    #: Per image at the default size, from the model catalog (None when unknown).
    batch_price: float | None = None
    online_price: float | None = None
    price_size: str = ""
    #: Why the run ended before every batch had ended (None: they all did).
    reason: str | None = None


@dataclass
class BatchContext:
    """One run's batch settings, store, API and output folder."""

    job: Job
    run_id: int
    runner_id: str
    db: AsyncStore
    backend: BatchBackend
    provider: ProviderContext
    outputs: OutputFolder
    config: BatchConfig
    policy: RetryPolicy
    output_template: str
    model: str
    #: Where input and result files are kept while a batch is open.
    workdir: Path
    stats: RunStats = field(default_factory=RunStats)
    lease_s: float = 60.0
    max_attempts: int = 4
    only_keys: list[str] | None = None
    deadline: float | None = None
    #: Why the run was asked to stop (a signal), or None.
    stop_requested: Callable[[], str | None] = lambda: None
    #: Items a run may still send: ``None`` for no budget.
    budget_items: int | None = None
    images_per_item: int = 1
    outcome: BatchOutcome = field(default_factory=BatchOutcome)

    def __post_init__(self) -> None:
        self.batches = BatchQueries(self.db.store)
        self._beat = -HEARTBEAT_S

    def work_file(self, batch_id: int, kind: str) -> Path:
        """A batch's ``input`` or ``results`` file while the batch is open."""
        return self.workdir / f"batch-{batch_id}-{kind}.jsonl"

    async def q(self, fn: Callable[..., object], *args: object, **kw: object) -> object:
        """A store call on the store's thread."""
        return await self.db.in_thread(fn, *args, **kw)

    async def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` unless a stop comes first; True when it did.  The run's heartbeat
        goes on meanwhile (a batch run may wait for hours: it is alive all the same)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.stop_requested():
                return True
            await self.heartbeat()
            await asyncio.sleep(min(TICK_S, max(0.0, end - time.monotonic())))
        return bool(self.stop_requested())

    async def heartbeat(self) -> None:
        """Tell the store this runner is alive, at most every ``HEARTBEAT_S``."""
        now = time.monotonic()
        if self.run_id and now - self._beat >= HEARTBEAT_S:
            self._beat = now
            await self.db.heartbeat(self.run_id, self.runner_id, self.lease_s)
