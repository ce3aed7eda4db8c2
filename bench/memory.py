"""7. Memory: many large replies in flight at once (2K, concurrency 64), batchfuse against the
bare aiohttp baseline; the same harness as :mod:`large` (real-entropy PNGs of real size)."""

from __future__ import annotations

from pathlib import Path

from common import Report
from large import LATENCY_MS, RATIO, compare, rows_for, targets_for

NAME = "memory"
TITLE = "Memory with 64 large replies in flight"


def run(quick: bool, work: Path) -> Report:
    n, concurrency, rounds = (32, 16, 1) if quick else (64, 64, 3)
    result = compare(n, concurrency, "2K", rounds, work, "2K")
    return Report(
        name=NAME,
        title=TITLE,
        setup=(f"{n} items per run at 2K ({RATIO}), real-entropy noise PNGs of real pixel size, mock latency "
               f"{LATENCY_MS} ms, concurrency {concurrency}; {rounds} alternating round(s), medians; memory per "
               f"in-flight reply = (peak RSS − peak RSS of a 1-item run) / (concurrency − 1)"),
        header=["", "baseline", "batchfuse", "batchfuse / baseline"],
        rows=rows_for("2K", result),
        targets=targets_for("2K, concurrency 64", result, cpu=False),
        data=result,
        quick=quick,
    )
