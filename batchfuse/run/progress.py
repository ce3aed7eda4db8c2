"""Showing a run's progress: a live bar on a terminal, plain periodic lines otherwise
(cron mails and log files stay readable)."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TextIO

from batchfuse.run.stats import RunStats


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 item``, ``2 items``."""
    return f"{n} {word if n == 1 else words or word + 's'}"


def _eta(stats: RunStats) -> str:
    eta = stats.eta_s()
    return f"ETA {fmt_duration(eta)}" if eta is not None else "ETA after the first item"


def summary_line(stats: RunStats) -> str:
    """A progress line while the run goes on."""
    return (
        f"{stats.done}/{stats.to_do} done ({stats.succeeded} succeeded, {stats.failed} failed), "
        f"{stats.in_flight} in flight, {plural(stats.retries, 'retry', 'retries')}, {stats.rate():.1f} items/s, "
        f"{_eta(stats)}"
    )


def final_line(stats: RunStats, adopted_from: str | None = None) -> str:
    """What this run did, when it is over: no ETA and no share of a plan other runners may have
    finished (on PostgreSQL the job's own counts follow on their own line)."""
    if not stats.done and not stats.requests:
        return "nothing to do" if not stats.to_do else "nothing done"
    adopted = stats.adopted
    kept = (
        f", {adopted} of them adopted from outputs already in {adopted_from or 'the output folder'} (not sent again)"
        if adopted else ""
    )
    return (
        f"this run finished {plural(stats.done, 'item')} ({stats.succeeded} succeeded, {stats.failed} failed{kept}), "
        f"{plural(stats.requests, 'request')}, {plural(stats.retries, 'retry', 'retries')}, "
        f"{stats.rate():.1f} items/s"
    )


async def show_progress(stats: RunStats, stream: TextIO = sys.stderr) -> None:
    """Runs until cancelled; starts once the plan has been reported."""
    while not stats.planned:
        await asyncio.sleep(0.05)
    if stream.isatty():
        await _live(stats, stream)
    else:
        interval = float(os.environ.get("BATCHFUSE_PROGRESS_INTERVAL", "10"))
        while True:
            await asyncio.sleep(interval)
            print(f"progress: {summary_line(stats)}", file=stream, flush=True)


async def _live(stats: RunStats, stream: TextIO) -> None:
    # imported here: `status` and `validate` use this module's lines, not the live display
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=stream)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("running", total=stats.to_do or None, detail="")
        try:
            while True:
                bar.update(
                    task,
                    completed=stats.done,
                    total=stats.to_do or None,
                    description=stats.status,
                    detail=(
                        f"failed {stats.failed} · in flight {stats.in_flight} · "
                        f"{stats.rate():.1f}/s · {_eta(stats)}"
                    ),
                )
                await asyncio.sleep(0.25)
        except asyncio.CancelledError:
            pass
