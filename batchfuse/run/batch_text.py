"""How batch mode is told to the user: the run's last batch line and the ``status`` section."""

from __future__ import annotations

import time
from typing import Any

from batchfuse.run.progress import fmt_duration, plural
from batchfuse.run.stats import RunStats


def _price(value: float | None, size: str = "") -> str:
    if value is None:
        return "price unknown"
    return f"${value:.4g}/image" + (f" at {size}" if size else "")


def batch_line(outcome: Any, stats: RunStats) -> str:
    """``batch: ...`` after a batch-mode run (``outcome`` is a ``batchfuse.batch.BatchOutcome``)."""
    parts = [f"{plural(outcome.created, 'batch', 'batches')} created"]
    if outcome.adopted:
        parts.append(f"{outcome.adopted} adopted after a crash")
    parts.append(f"{outcome.applied} results applied at the batch price ({_price(outcome.batch_price, outcome.price_size)})")
    if outcome.uploads:
        parts.append(f"{plural(outcome.uploads, 'reference image')} uploaded")
    if outcome.fallback:
        parts.append(f"{outcome.fallback} items run online at the full price ({_price(outcome.online_price, outcome.price_size)})")
    if outcome.unknown_lines or outcome.duplicate_lines:
        parts.append(f"{outcome.unknown_lines} result lines with unknown keys and "
                     f"{outcome.duplicate_lines} repeated ones not applied")
    if outcome.out:
        parts.append(f"{plural(outcome.out, 'item')} still out in {plural(outcome.batches_out, 'batch', 'batches')} "
                     "(the next run collects them)")
    return "batch: " + ", ".join(parts)


def batches_text(batches: list[dict[str, Any]], limit: int = 20) -> str:
    """The ``status`` section listing the job's batches, newest first."""
    lines = ["batches:"]
    for b in batches[:limit]:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(b["submitted_at"] or b["created_at"]))
        counts = f"{b['requests']} requests"
        if b["succeeded"] is not None or b["failed"] is not None:
            counts += f", {b['succeeded'] or 0} ok, {b['failed'] or 0} failed"
        stale = " — STALE" if b["stale"] else ""
        lines.append(f"  {b['name']} {b['state']}: {counts}; submitted {when}, age {fmt_duration(b['age_s'])}{stale}")
        keys = ", ".join(b["items"][:5]) + (", ..." if b["requests"] > 5 else "")
        lines.append(f"    items: {keys}")
        if b["error"]:
            lines.append(f"    {b['error']}")
        if b["unknown_lines"] or b["duplicate_lines"]:
            lines.append(f"    {b['unknown_lines']} unknown and {b['duplicate_lines']} repeated result lines not applied")
    if len(batches) > limit:
        lines.append(f"  ... and {len(batches) - limit} older (status --json lists all)")
    return "\n".join(lines)


def price_lines(mode: str, batch: float | None, online: float | None, fallback: bool) -> list[str]:
    """``validate``'s lines on the catalog's prices beside the estimate: in batch mode the batch
    total and what stragglers the fallback runs online would pay; online, what batch mode would."""
    if mode != "batch":
        return [f"batch mode (provider.mode: batch) would cost about ${batch:,.2f} at the catalog's batch prices"] if batch else []
    lines = [f"batch mode: about ${batch:,.2f} at the catalog's batch price" if batch is not None
             else "batch mode: the catalog has no batch price for this model"]
    if fallback and online is not None:
        lines.append(f"  items the fallback runs online pay the online price: up to ${online:,.2f} if all of them did")
    return lines
