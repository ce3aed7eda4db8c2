"""The library API: validate, run and inspect a job described by a manifest.

::

    from batchfuse.run.job import run_job, RunOptions
    result = asyncio.run(run_job(Path("jobs/demo.yaml"), RunOptions()))
    print(result.exit_code, result.reason)

The CLI is a thin layer over these functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchfuse.errors import InputError, ManifestError
from batchfuse.images import EncodedImageCache
from batchfuse.outputs.files import OutputFolder
from batchfuse.outputs.marker import check_output_folder
from batchfuse.outputs.objecttarget import ObjectOutputs
from batchfuse.plan.catalog import raw_items
from batchfuse.plan.manifest import did_you_mean
from batchfuse.plan.preview import Loaded, cost_per_image, cost_per_token, load, mock_config
from batchfuse.providers.base import ProviderContext
from batchfuse.providers.fetch import Fetcher, origin
from batchfuse.records import Job, PlanSummary
from batchfuse.run.breaker import Breaker
from batchfuse.run.other_jobs import check_other_jobs, with_adoptions
from batchfuse.run.retry import RetryPolicy
from batchfuse.run.revisions import keep_superseded, revised_digest, revised_rows
from batchfuse.run.scheduler import Scheduler, SchedulerConfig
from batchfuse.run.stats import RunStats
from batchfuse.run.wire import WireConnector
from batchfuse.store.aio import AsyncStore
from batchfuse.store.engine import resolve_db_url
from batchfuse.store.queries import Store
from batchfuse.store.verdicts import job_revisions

log = logging.getLogger("batchfuse.run")


#: Exit codes, as documented in README (2, bad input, comes from InputError.exit_code);
#: 4: the run was stopped by an internal error (a bug), never reported as completed.
EXIT_OK, EXIT_FAILED_ITEMS, EXIT_STOPPED, EXIT_INTERNAL = 0, 1, 3, 4


@dataclass
class RunOptions:
    db: str | None = None
    retry_failed: bool = False
    only: list[str] | None = None
    #: Run only this many items, spread evenly across the plan (a look before spending).
    sample: int | None = None
    #: No request starts after this moment (``time.time()``).
    deadline: float | None = None
    #: After a stop, in-flight requests get this long before they are cancelled.
    grace_s: float = 60.0
    #: How long a claim lasts without a heartbeat; short in tests of dead runners.
    lease_s: float = field(default_factory=lambda: float(os.environ.get("BATCHFUSE_LEASE_S", "60")))
    #: ``online`` or ``batch``; None: the manifest's ``provider.mode``.
    mode: str | None = None


@dataclass
class RunResult:
    exit_code: int
    reason: str
    succeeded: int
    failed: int
    requests: int
    counts: dict[str, int]
    plan: PlanSummary
    #: Reference images read from disk (or downloaded) and encoded in this run.
    image_reads: int = 0
    image_encodes: int = 0


@dataclass
class RunControl:
    """Lets the caller watch a run and stop it (from a signal handler, say)."""

    stats: RunStats = field(default_factory=RunStats)
    scheduler: Scheduler | None = None
    _pending_stop: str | None = None
    #: What the batch part of a batch-mode run came to (a ``batchfuse.batch.BatchOutcome``).
    batch: Any = None

    def stop(self, reason: str) -> None:
        if self.scheduler is not None:
            self.scheduler.stop(reason)
        else:
            self._pending_stop = reason

    def cancel_in_flight(self) -> None:
        if self.scheduler is not None:
            self.scheduler.cancel_in_flight()


def open_store(loaded: Loaded, db: str | None) -> Store:
    return Store.open(resolve_db_url(db, loaded.path))


def sync(store: Store, loaded: Loaded, *, dry_run: bool = False, job: Job | None = None) -> tuple[Job, PlanSummary]:
    """Plan the manifest into the store (``job``, if given, is the job row already taken)."""
    m = loaded.manifest
    if job is None:
        job = (
            store.find_job(m.job)
            if dry_run
            else store.ensure_job(m.job, m.provider.kind, m.provider.model, str(loaded.path.resolve()))
        )
    if job is None:  # dry run of a job never planned: everything is new
        return Job(-1, m.job, m.provider.kind, m.provider.model, ""), PlanSummary(new=loaded.items)
    problems: list[ManifestError] = []
    revisions = job_revisions(store, job)  # the review's rejects
    rows = revised_rows(loaded.planner.rows(problems), revisions)
    summary = store.sync_plan(job, rows, m.limits.max_attempts, dry_run=dry_run,
                              digest=revised_digest(loaded.planner.digest, revisions))
    if not dry_run:
        keep_superseded(store, job, loaded.planner.output_dir)  # earlier images live on as versions
    return job, summary


@contextlib.asynccontextmanager
async def _endpoint(loaded: Loaded) -> AsyncIterator[str]:
    """The API's base URL; for ``mock``, the built-in mock API started on loopback."""
    if loaded.manifest.provider.base_url != "mock":
        yield loaded.manifest.provider.base_url
        return
    from batchfuse.mock import MockServer

    async with MockServer(mock_config(loaded.manifest, str(loaded.path))) as server:
        yield server.url


@contextlib.asynccontextmanager
async def _fetcher(loaded: Loaded, base_url: str) -> AsyncIterator[Fetcher]:
    """URL downloads for this run; the API's own origin (host and port) is always allowed."""
    fetcher = Fetcher(
        allow_private=loaded.manifest.network.allow_private,
        allowed_hosts=frozenset({origin(base_url)}),
        max_bytes=int(loaded.manifest.network.max_download_mb * 1024 * 1024),
        timeout_s=loaded.manifest.limits.timeout_s,
    )
    try:
        yield fetcher
    finally:
        await fetcher.close()


def scheduler_config(loaded: Loaded, options: RunOptions, only: list[str] | None, shared: bool) -> SchedulerConfig:
    """The scheduler's settings from the manifest's limits and the run's options."""
    m = loaded.manifest
    return SchedulerConfig(
        concurrency=m.limits.concurrency,
        requests_per_minute=m.limits.requests_per_minute,
        policy=RetryPolicy(
            max_attempts=m.limits.max_attempts,
            base_delay_s=m.limits.backoff_base_s,
            max_delay_s=m.limits.backoff_max_s,
        ),
        output_template=m.output.filename,
        model=m.provider.model,
        job_name=m.job,
        lease_s=options.lease_s,
        only_keys=only,
        max_images=m.limits.max_images,
        max_cost=m.limits.max_cost,
        cost_per_image=cost_per_image(loaded.planner),
        cost_per_token=cost_per_token(loaded.planner),
        images_per_item=loaded.planner.provider.images_per_item,
        deadline=options.deadline,
        grace_s=options.grace_s,
        adaptive=m.limits.adaptive_rate,
        shared=shared,
        breaker=Breaker(threshold=m.limits.outage_threshold, first_delay=m.limits.outage_pause_s),
    )


def check_only(loaded: Loaded, only: list[str] | None) -> list[str] | None:
    """``--only`` keys must name items of the manifest (InputError naming the others); an item
    with ``variants`` stands for all its variant rows (``mug`` -> ``mug#1``, ``mug#2``, ...)."""
    if not only:
        return only
    keys = [r.key for r in raw_items(loaded.manifest, loaded.path) if not isinstance(r, ManifestError)]
    known = set(keys)
    variant_rows: dict[str, list[str]] = {}
    if any("#" in k for k in only) or getattr(loaded.planner.provider.Params, "model_fields", {}).get("variants"):
        for row_key in loaded.planner.digest or ():  # the planned rows' keys, in plan order (validate kept them)
            base, sep, number = row_key.rpartition("#")
            if sep and number.isdigit() and row_key not in known:
                variant_rows.setdefault(base, []).append(row_key)
    rows = {k for group in variant_rows.values() for k in group}
    unknown = [k for k in dict.fromkeys(only) if k not in known and k not in rows]
    if unknown:
        hint = did_you_mean(unknown[0], keys)
        raise InputError(
            f"{loaded.path}: --only: job {loaded.manifest.job!r} has no item "
            f"{', '.join(repr(k) for k in unknown)}{hint} (keys are the items' ids, case-sensitive)"
        )
    return [key for k in dict.fromkeys(only) for key in variant_rows.get(k, [k])]


async def _take_job(
    store: Store, db: AsyncStore, loaded: Loaded, options: RunOptions, remote: ObjectOutputs | None = None
) -> tuple[Job, int, str]:
    """Register this runner on the job, before planning writes anything.

    Alone on SQLite, the job lock (a live runner refuses the start) is taken first, in one
    transaction with the job row: a refused run leaves the database as it was.  Runners that
    share a job (PostgreSQL) first check that they see the shared output folder.
    """
    m = loaded.manifest
    args = (m.job, m.provider.kind, m.provider.model, str(loaded.path.resolve()))
    if not store.is_sqlite:
        job = await db.ensure_job(*args)
        token = await db.output_token(job, create=True)
        if remote is not None:  # the marker is an object under the bucket's prefix
            await remote.check(token, lambda: db.in_thread(store.live_runners, job, options.lease_s))
            return await db.open_run(*args, exclusive=store.is_sqlite)
        await db.in_thread(
            check_output_folder, token, lambda: store.live_runners(job, options.lease_s), job.name,
            loaded.planner.output_dir,
        )
    return await db.open_run(*args, exclusive=store.is_sqlite)


async def run_job(
    path: Path,
    options: RunOptions | None = None,
    control: RunControl | None = None,
    on_planned: Callable[[PlanSummary, dict[str, int], int], None] | None = None,
) -> RunResult:
    """Plan ``path`` into its database and run whatever is not done."""
    options = options or RunOptions()
    control = control or RunControl()
    loaded = await asyncio.to_thread(load, path)
    for warning in loaded.planner.warnings:  # an unlisted model: said once, as validate says it
        log.warning(warning, extra={"event": "warning"})
    credentials = loaded.planner.provider.credentials(
        loaded.manifest.provider.api_key_env, loaded.planner.provider_config, str(loaded.path),
        mock=loaded.manifest.provider.base_url == "mock",
    )
    only_keys = await asyncio.to_thread(check_only, loaded, options.only)
    m = loaded.manifest
    remote = await _open_bucket(loaded)  # probed: a missing bucket or refused credentials stop here
    store = await asyncio.to_thread(open_store, loaded, options.db)
    db = AsyncStore(store)
    try:
        found = await db.in_thread(check_other_jobs, store, loaded.planner)  # read-only: before anything is written
        shared = not store.is_sqlite
        job, run_id, runner_id = await _take_job(store, db, loaded, options, remote)
        reason, error, internal = "completed", None, False
        image_cache = EncodedImageCache(max_side=m.images_config.max_side)
        outputs = OutputFolder(loaded.planner.output_dir, runner_id) if remote is None else remote.tagged(runner_id)
        try:
            job, summary = await db.in_thread(sync, store, loaded, job=job)
            if options.retry_failed:
                await db.retry_failed(job)
            if found:
                summary = with_adoptions(
                    summary, found, await db.in_thread(store.settled, job), loaded.planner.output_shown
                )
            if not shared:  # alone on the job: whatever is in the temp folder is a dead run's
                await asyncio.to_thread(outputs.clean_temp)
            only = only_keys
            if options.sample:
                keys = await db.runnable_keys(job, m.limits.max_attempts)
                only = spread(keys, options.sample)
            counts = await db.counts(job)
            control.stats.to_do = len(only) if only is not None else counts["pending"] + counts["running"]
            if on_planned:
                on_planned(summary, counts, control.stats.to_do)
            control.stats.planned = True
            connector = WireConnector(limit=m.limits.concurrency * 2, limit_per_host=0)
            async with _endpoint(loaded) as base_url, loaded.planner.provider.open_session(
                connector, loaded.planner.provider_config
            ) as session, _fetcher(loaded, base_url) as fetcher:
                provider = loaded.planner.provider(
                    ProviderContext(
                        base_url=base_url,
                        model=m.provider.model,
                        credentials=credentials,
                        session=session,
                        images=image_cache,
                        timeout_s=m.limits.timeout_s,
                        fetcher=fetcher,
                        config=loaded.planner.provider_config,
                        spool_dir=outputs.temp,
                    )
                )
                config = scheduler_config(loaded, options, only, shared)
                config.wire_checked = True  # the session's WireConnector marks when a request leaves
                scheduler = Scheduler(config, db, job, run_id, runner_id, provider, outputs, control.stats)
                control.scheduler = scheduler
                if control._pending_stop:
                    scheduler.stop(control._pending_stop)
                log.info(
                    "run started: job %s, %d items to do, pid %d", m.job, control.stats.to_do, os.getpid(),
                    extra={"event": "run_start", "job": m.job, "to_do": control.stats.to_do, "run_id": run_id},
                )
                if (options.mode or m.provider.mode) == "batch":  # batch mode (issue 16): see batchfuse.batch
                    from batchfuse.batch.compose import run_batch_mode

                    batched = await run_batch_mode(
                        loaded, config, control.stats, db, job, run_id, runner_id, provider.ctx, outputs,
                        lambda: scheduler.stop_reason,
                    )
                    control.batch = batched
                    if not batched.online_all:
                        config.only_keys = batched.online_keys or None
                    reason = batched.reason or reason
                if (options.mode or m.provider.mode) != "batch" or config.only_keys or batched.online_all:
                    await scheduler.run()
                if scheduler.stop_reason:
                    reason, error = scheduler.stop_reason, scheduler.stop_error
                internal = scheduler.internal_error
        except BaseException as exc:
            reason = f"ended by {type(exc).__name__}: {exc}"
            raise
        finally:
            await asyncio.to_thread(outputs.clean_temp, True)
            stats = control.stats
            await db.end_run(
                run_id, runner_id, reason, stats.succeeded, stats.failed, stats.requests
            )
        counts = await db.counts(job)
        stats = control.stats
        log.info(
            "run ended: %s; %d succeeded, %d failed, %d requests; job: %d/%d done, %d pending",
            reason, stats.succeeded, stats.failed, stats.requests,
            counts["succeeded"], counts["total"], counts["pending"] + counts["running"],
            extra={"event": "run_end", "reason": reason, "succeeded": stats.succeeded,
                   "failed": stats.failed, "requests": stats.requests, "counts": counts,
                   "adopted": stats.adopted, "spooled": stats.spooled,
                   "in_flight": stats.in_flight_at_stop, "returned": stats.returned},
        )
        if internal:
            code = EXIT_INTERNAL
        elif error is not None or reason != "completed":
            code = EXIT_STOPPED
        else:
            code = EXIT_FAILED_ITEMS if counts["failed"] else EXIT_OK
        return RunResult(
            code, reason, stats.succeeded, stats.failed, stats.requests, counts, summary,
            image_reads=image_cache.reads, image_encodes=image_cache.encodes,
        )
    finally:
        db.close()
        store.close()
        if remote is not None:
            await remote.close()


async def _open_bucket(loaded: Loaded) -> ObjectOutputs | None:
    """For an ``s3://`` output.dir: the bucket's client, after a tiny write and delete there."""
    location = loaded.planner.output_location
    if location is None:
        return None
    return await ObjectOutputs(location, loaded.planner.output_dir, "w", loaded.manifest.job).open()


async def cancel_batches(path: Path, options: RunOptions) -> tuple[int, int]:
    """``batchfuse batches cancel``: cancel the job's live batches (batch mode); returns
    (batches cancelled, items pending again)."""
    from batchfuse.batch.compose import cancel_job_batches

    loaded = await asyncio.to_thread(load, path)
    m = loaded.manifest
    credentials = loaded.planner.provider.credentials(
        m.provider.api_key_env, loaded.planner.provider_config, str(loaded.path), mock=m.provider.base_url == "mock"
    )
    store = await asyncio.to_thread(open_store, loaded, options.db)
    db = AsyncStore(store)
    try:
        job = await db.in_thread(store.find_job, m.job)
        if job is None:
            return 0, 0
        async with _endpoint(loaded) as base_url, loaded.planner.provider.open_session(
            WireConnector(limit=4, limit_per_host=0), loaded.planner.provider_config
        ) as session, _fetcher(loaded, base_url) as fetcher:
            ctx = ProviderContext(base_url=base_url, model=m.provider.model, credentials=credentials, session=session,
                                  images=EncodedImageCache(), timeout_s=m.limits.timeout_s, fetcher=fetcher,
                                  config=loaded.planner.provider_config)
            return await cancel_job_batches(loaded, db, job, ctx)
    finally:
        db.close()
        store.close()


def spread(keys: list[str], n: int) -> list[str]:
    """``n`` keys spread evenly over ``keys`` (first and last included)."""
    if n >= len(keys):
        return list(keys)
    if n == 1:
        return [keys[0]]
    return [keys[round(i * (len(keys) - 1) / (n - 1))] for i in range(n)]
