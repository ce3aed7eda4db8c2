"""One run in batch mode: adopt what an earlier run left, collect what has ended, submit what
is in no batch, then wait (polling every ``batch.poll_s``) until the batches have ended, the
deadline comes or the run is stopped.

With ``batch.fallback_online`` and a deadline, ``batch.fallback_lead_s`` before it the batches
still out are cancelled (a batch that finished meanwhile is applied instead) and their items
handed back: :func:`run_batches` returns their keys, and the composition root runs them online.
A batch pending or running longer than ``batch.stale_after_h`` is reported (log and status).
"""

from __future__ import annotations

import logging
import time

from batchfuse.batch.collect import Collector
from batchfuse.batch.context import BatchContext, BatchOutcome
from batchfuse.batch.refs import RefUploads
from batchfuse.batch.submit import Submitter
from batchfuse.errors import TransientError
from batchfuse.providers.batch_base import CANCELLED, LIVE, SUCCEEDED
from batchfuse.store.batches import BatchRow

log = logging.getLogger("batchfuse.run")

__all__ = ["BatchContext", "BatchOutcome", "cancel_live_batches", "run_batches"]


async def run_batches(ctx: BatchContext) -> BatchOutcome:
    submitter, collector = Submitter(ctx, RefUploads(ctx)), Collector(ctx)
    outcome = ctx.outcome
    warned: set[int] = set()
    fallback_at = None
    if ctx.deadline is not None and ctx.config.fallback_online:
        fallback_at = ctx.deadline - ctx.config.fallback_lead_s
    while True:
        if (why := ctx.stop_requested()) is not None:
            outcome.reason = why
            break
        try:
            await ctx.heartbeat()
            open_rows: list[BatchRow] = await ctx.q(ctx.batches.take, ctx.job, ctx.runner_id)  # type: ignore[assignment]
            await submitter.adopt_or_launch([b for b in open_rows if b.remote_name is None])
            cancelled = []
            for b in open_rows:  # as read by take: only this runner changes them, and launching did not
                if b.remote_name is not None or b.state == SUCCEEDED:
                    remote = await collector.poll(b)
                    if remote is not None and remote.state == CANCELLED:
                        cancelled.append(b.display_name)
            if cancelled:  # someone cancelled (`batches cancel`, the console): do not send them again now
                outcome.reason = f"batch {cancelled[0]} was cancelled; its items are pending for the next run"
                break
            if fallback_at is not None and time.time() >= fallback_at:
                await _fall_back(ctx, collector, outcome)
                outcome.online_all = True
                break
            await submitter.submit_new()
        except TransientError as exc:  # the API is busy or away: what is recorded is picked up next round
            log.warning("batch API: %s; trying again in %g s", exc.message, ctx.config.poll_s,
                        extra={"event": "batch_api_error", "error": exc.message})
            if await ctx.pause(ctx.config.poll_s):
                continue
        live: list[BatchRow] = await ctx.q(ctx.batches.open_batches, ctx.job)  # type: ignore[assignment]
        _warn_stale(ctx, live, warned)
        if not live:
            break
        if not ctx.config.wait:
            outcome.reason = "batches submitted; a later run collects them"
            break
        now = time.time()
        wake = now + ctx.config.poll_s
        if fallback_at is not None:
            wake = min(wake, fallback_at)
        if ctx.deadline is not None:
            if now >= ctx.deadline:
                outcome.reason = "deadline reached"
                break
            wake = min(wake, ctx.deadline)
        if await ctx.pause(max(0.0, wake - now)):
            continue  # the stop is seen at the top
    remaining: list[BatchRow] = await ctx.q(ctx.batches.open_batches, ctx.job)  # type: ignore[assignment]
    outcome.batches_out = len(remaining)
    outcome.out = int(await ctx.q(ctx.batches.items_out, ctx.job))  # type: ignore[call-overload]
    if outcome.out and outcome.reason is None:
        outcome.reason = f"{outcome.out} items still out in {outcome.batches_out} batches"
    outcome.online_keys = submitter.spooled_keys + outcome.online_keys
    return outcome


async def _fall_back(ctx: BatchContext, collector: Collector, outcome: BatchOutcome) -> None:
    """Cancel the batches still out and hand their items back for an online run (a batch that
    finished meanwhile is applied instead; the online pass claims only what is pending)."""
    rows: list[BatchRow] = await ctx.q(ctx.batches.take, ctx.job, ctx.runner_id)  # type: ignore[assignment]
    for b in rows:
        if b.state not in LIVE and b.remote_name is not None:
            continue
        members = await ctx.q(ctx.batches.members, b.id, None)
        keys = [m.item.key for m in members.values() if m.open]  # type: ignore[attr-defined]
        if b.remote_name is not None:
            await ctx.backend.cancel(b.remote_name)
            remote = await collector.poll(b)
            if remote is not None and remote.state == SUCCEEDED:
                continue
        await ctx.q(ctx.batches.hand_back, b.id, "cancelled", "taken out of its batch to run online before the deadline",
                    "fallback")
        outcome.online_keys += keys
    outcome.fallback = len(outcome.online_keys)
    if outcome.fallback:
        log.warning("fallback: %d items not back from their batches run online before the deadline (full price)",
                    outcome.fallback, extra={"event": "batch_fallback", "items": outcome.fallback})


def _warn_stale(ctx: BatchContext, live: list[BatchRow], warned: set[int]) -> None:
    limit = ctx.config.stale_after_h * 3600
    now = time.time()
    for b in live:
        since = b.submitted_at or b.created_at
        if b.id not in warned and now - since > limit:
            warned.add(b.id)
            log.warning("batch %s has been %s for %.1f h (stale_after_h %g)", b.display_name, b.state,
                        (now - since) / 3600, ctx.config.stale_after_h,
                        extra={"event": "batch_stale", "batch": b.display_name, "state": b.state})


async def cancel_live_batches(ctx: BatchContext) -> int:
    """``batchfuse batches cancel``: cancel the job's live batches; their items go back to pending."""
    rows: list[BatchRow] = await ctx.q(ctx.batches.open_batches, ctx.job)  # type: ignore[assignment]
    n = 0
    collector = Collector(ctx)
    for b in rows:
        if b.remote_name is None:
            continue
        await ctx.backend.cancel(b.remote_name)
        await collector.poll(b)
        n += 1
    return n
