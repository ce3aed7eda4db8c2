"""Concurrency, pacing, shared images and progress, observed from the outside."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from batchfuse.run.job import RunOptions, run_job
from tests.conftest import cli, cli_process, generation_requests, items, manifest, wait_for


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, delta in events:
        now += delta
        best = max(best, now)
    return best


def test_at_most_concurrency_requests_are_in_flight(job, mock):
    mock.configure(latency_ms=60)
    job.write(manifest(mock.url, items(16), limits={"concurrency": 3}))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    # the request itself: from its start for its latency (writing outputs happens after the gate)
    intervals = job.sql("SELECT started_at, started_at + latency_ms / 1000.0 FROM attempts")
    assert len(intervals) == 16
    assert max_overlap(intervals) == 3


def test_requests_per_minute_is_kept_smoothly(job, mock):
    job.write(manifest(mock.url, items(8),
                       limits={"concurrency": 8, "requests_per_minute": 600}))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    starts = sorted(s for (s,) in job.sql("SELECT started_at FROM attempts"))
    interval = 60 / (600 * 0.98)
    # not a burst of 8 at once but spread over the schedule; only a lower bound, which load can
    # only stretch (the schedule's precision is tests/unit/test_limits.py's, on a patched clock,
    # and bench/rate.py's)
    assert starts[-1] - starts[0] >= 7 * interval / 2


def test_a_shared_reference_image_is_read_and_encoded_once_per_run(job, mock):
    items = [{"id": f"i{i}", "prompt": f"p{i}", "images": ["images/scene.png", "images/logo.png"]} for i in range(12)]
    job.write(manifest(mock.url, items, limits={"concurrency": 6}))
    result = asyncio.run(run_job(job.manifest, RunOptions()))
    assert result.exit_code == 0
    assert (result.image_reads, result.image_encodes) == (2, 2)
    assert len(generation_requests(mock)) == 12


def test_plain_progress_lines_when_not_on_a_terminal(job, mock):
    mock.faults(hold_after=4)  # four done, then the run waits at the mock until we have seen progress
    job.write(manifest(mock.url, items(24), limits={"concurrency": 2, "timeout_s": 300}))
    proc = cli_process("run", job.manifest, env={"BATCHFUSE_PROGRESS_INTERVAL": "0.2"})

    def progress_lines() -> list[str]:
        return [line for line in proc.err().splitlines() if line.startswith("progress: ")]

    wait_for(lambda: len(progress_lines()) >= 2, "two progress lines", proc=proc)
    mock.faults(hold=False)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = progress_lines()
    assert "items/s" in lines[-1] and "ETA" in lines[-1]
    assert "completed: this run finished 24 items (24 succeeded, 0 failed)" in err


HOLD_THE_LOCK = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) SELECT count(*) FROM c"


def test_readers_and_writers_beside_a_live_run_never_see_database_busy(job, mock, backend):
    if backend != "sqlite":
        pytest.skip("SQLite locking: PostgreSQL has row locks and no database-wide write lock")
    mock.configure(latency_ms=30)
    job.write(manifest(mock.url, items(40), limits={"concurrency": 8}))
    proc = cli_process("run", job.manifest)
    wait_for(lambda: job.scalar("SELECT count(*) FROM items") == 40, "the run to plan", proc=proc)
    errors: list[str] = []
    attempts = "SELECT count(*) FROM attempts"

    def writer() -> None:
        """Take the write lock, hold it through some work, then let the run write once."""
        while proc.poll() is None:
            try:
                with sqlite3.connect(job.db, timeout=30) as conn:
                    conn.execute("BEGIN IMMEDIATE")
                    seen = conn.execute(attempts).fetchone()[0]
                    conn.execute(HOLD_THE_LOCK).fetchone()
                    conn.rollback()
                wait_for(lambda: proc.poll() is not None or job.scalar(attempts) > seen,  # noqa: B023
                         "the run to record another attempt")
            except (sqlite3.OperationalError, AssertionError) as exc:
                errors.append(str(exc))
                return

    thread = threading.Thread(target=writer)
    thread.start()
    statuses: list[tuple[int, str]] = []
    try:
        while proc.poll() is None:
            shown = cli("status", job.manifest)
            statuses.append((shown.exit_code, shown.stderr))
    finally:
        _, err = proc.communicate(timeout=60)
        thread.join()
    assert proc.returncode == 0, err
    assert "locked" not in err and "Traceback" not in err, err
    assert errors == []
    assert statuses and [s for s in statuses if s[0] != 0] == []
