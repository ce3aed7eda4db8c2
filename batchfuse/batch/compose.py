"""Building a run's :class:`~batchfuse.batch.context.BatchContext` from what the composition
root (:mod:`batchfuse.run.job`) has in hand, and the batch price used by budgets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchfuse.batch.context import BatchContext
from batchfuse.batch.runner import BatchOutcome, cancel_live_batches, run_batches
from batchfuse.model_catalog import lookup
from batchfuse.outputs.files import OutputFolder
from batchfuse.plan.preview import Loaded
from batchfuse.providers.base import ProviderContext
from batchfuse.providers.gemini_batch import GeminiBatch
from batchfuse.records import Job
from batchfuse.run.retry import RetryPolicy
from batchfuse.run.scheduler import SchedulerConfig
from batchfuse.run.stats import RunStats
from batchfuse.store.aio import AsyncStore
from batchfuse.store.batches import BatchQueries

#: Where a batch's input and result files wait, inside the output folder.
WORKDIR = ".batchfuse-batches"


def catalog_prices(model: str, size: str | None) -> tuple[str, float | None, float | None] | None:
    """The model catalog's size for ``size`` (itself when listed, else the model's first) and
    the online and batch prices of one image at it; None when the catalog lacks the model."""
    entry = lookup(model)
    if entry is None:
        return None
    size = size if size in entry.sizes else entry.sizes[0]
    return size, entry.price_per_image(size), entry.price_per_image(size, batch=True)


def batch_ratio(model: str, size: str | None) -> float:
    """Batch price / online price for ``model`` at ``size`` from the model catalog (0.5 when unknown)."""
    _, online, batch = catalog_prices(model, size) or ("", None, None)
    return batch / online if online and batch is not None else 0.5


def make_context(
    loaded: Loaded, config: SchedulerConfig, stats: RunStats, db: AsyncStore, job: Job, run_id: int,
    runner_id: str, provider: ProviderContext, outputs: OutputFolder, stop_requested: Callable[[], str | None],
) -> BatchContext:
    m = loaded.manifest
    ctx = BatchContext(
        job=job, run_id=run_id, runner_id=runner_id, db=db, backend=GeminiBatch(provider), provider=provider,
        outputs=outputs, config=m.batch, policy=config.policy, output_template=config.output_template,
        model=config.model, workdir=loaded.planner.output_dir / WORKDIR, stats=stats, lease_s=config.lease_s,
        max_attempts=m.limits.max_attempts, only_keys=config.only_keys, deadline=config.deadline,
        stop_requested=stop_requested, images_per_item=config.images_per_item(loaded.planner.defaults),
    )
    ctx.budget_items = budget_items(loaded, config, db, job)
    return ctx


def budget_items(loaded: Loaded, config: SchedulerConfig, db: AsyncStore, job: Job) -> int | None:
    """Items a run may still submit under ``max_images``/``max_cost``: items already out in
    batches count as spent (their images will come, and be billed)."""
    if config.max_images is None and config.max_cost is None:
        return None
    out = BatchQueries(db.store).items_out(job)
    per = max(1, config.images_per_item(loaded.planner.defaults))
    limits: list[int] = []
    if config.max_images is not None:
        limits.append(config.max_images // per - out)
    if config.max_cost is not None and config.cost_per_image > 0:
        unit = config.cost_per_image * batch_ratio(config.model, loaded.planner.defaults.get("image_size")) * per
        limits.append(int(config.max_cost / unit + 1e-9) - out)
    return max(0, min(limits)) if limits else None


async def run_batch_mode(*args: Any) -> BatchOutcome:
    """Run the batch part of a run (see :func:`make_context` for the arguments)."""
    ctx = make_context(*args)
    outcome = await run_batches(ctx)
    loaded, config = args[0], args[1]
    prices = catalog_prices(config.model, loaded.planner.defaults.get("image_size"))
    if prices is not None:
        outcome.price_size, outcome.online_price, outcome.batch_price = prices
    return outcome


async def cancel_job_batches(loaded: Loaded, db: AsyncStore, job: Job, provider: ProviderContext) -> tuple[int, int]:
    """Cancel ``job``'s live batches; returns (batches cancelled, items pending again)."""
    m = loaded.manifest
    ctx = BatchContext(
        job=job, run_id=0, runner_id="", db=db, backend=GeminiBatch(provider), provider=provider,
        outputs=OutputFolder(loaded.planner.output_dir), config=m.batch, policy=RetryPolicy(m.limits.max_attempts),
        output_template=m.output.filename, model=m.provider.model, workdir=loaded.planner.output_dir / WORKDIR,
    )
    before = await db.in_thread(ctx.batches.items_out, job)
    n = await cancel_live_batches(ctx)
    return n, before - await db.in_thread(ctx.batches.items_out, job)

