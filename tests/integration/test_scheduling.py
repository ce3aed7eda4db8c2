"""Concurrency, pacing, shared images and progress, observed from the outside."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest

from batchfuse.job import RunOptions, run_job
from tests.conftest import cli, cli_process, generation_requests, manifest


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, delta in events:
        now += delta
        best = max(best, now)
    return best


def test_at_most_concurrency_requests_are_in_flight(job, mock):
    mock.configure(latency_ms=60)
    job.write(manifest(mock.url, [{"id": f"i{i}", "prompt": f"p{i}"} for i in range(16)], limits={"concurrency": 3}))
    assert cli("run", job.manifest).exit_code == 0
    # the request itself: from its start for its latency (writing outputs happens after the gate)
    intervals = job.sql("SELECT started_at, started_at + latency_ms / 1000.0 FROM attempts")
    assert len(intervals) == 16
    assert max_overlap(intervals) == 3


def test_requests_per_minute_is_kept_smoothly(job, mock):
    job.write(manifest(mock.url, [{"id": f"i{i}", "prompt": f"p{i}"} for i in range(8)],
                       limits={"concurrency": 8, "requests_per_minute": 600}))
    assert cli("run", job.manifest).exit_code == 0
    starts = sorted(s for (s,) in job.sql("SELECT started_at FROM attempts"))
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    interval = 60 / (600 * 0.98)  # a little under the limit
    assert min(gaps) >= interval / 2 - 0.002  # never a burst: the window guard is half a slot
    assert 7 * interval * 0.97 <= starts[-1] - starts[0] < 7 * interval * 1.25  # on the schedule


def test_a_shared_reference_image_is_read_and_encoded_once_per_run(job, mock):
    items = [{"id": f"i{i}", "prompt": f"p{i}", "images": ["images/scene.png", "images/logo.png"]} for i in range(12)]
    job.write(manifest(mock.url, items, limits={"concurrency": 6}))
    result = asyncio.run(run_job(job.manifest, RunOptions()))
    assert result.exit_code == 0
    assert (result.image_reads, result.image_encodes) == (2, 2)
    assert len(generation_requests(mock)) == 12


def test_plain_progress_lines_when_not_on_a_terminal(job, mock):
    mock.configure(latency_ms=100)
    job.write(manifest(mock.url, [{"id": f"i{i}", "prompt": f"p{i}"} for i in range(24)], limits={"concurrency": 2}))
    proc = cli_process("run", job.manifest, env={"BATCHFUSE_PROGRESS_INTERVAL": "0.2"})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = [line for line in err.splitlines() if line.startswith("progress: ")]
    assert len(lines) >= 2
    assert "items/s" in lines[-1] and "ETA" in lines[-1]
    assert "completed: this run finished 24 items (24 succeeded, 0 failed)" in err


def test_readers_and_writers_beside_a_live_run_never_see_database_busy(job, mock, backend):
    if backend != "sqlite":
        pytest.skip("SQLite locking: PostgreSQL has row locks and no database-wide write lock")
    mock.configure(latency_ms=30)
    job.write(manifest(mock.url, [{"id": f"i{i}", "prompt": f"p{i}"} for i in range(40)], limits={"concurrency": 8}))
    proc = cli_process("run", job.manifest)
    errors: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                with sqlite3.connect(job.db, timeout=30) as conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("SELECT count(*) FROM items").fetchone()
                    time.sleep(0.05)  # hold the write lock a moment
                    conn.rollback()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    errors.append(str(exc))
            time.sleep(0.02)

    writer = threading.Thread(target=hammer)
    writer.start()
    statuses = []
    try:
        while proc.poll() is None:
            if job.db.exists():
                statuses.append(cli("status", job.manifest).exit_code)
            time.sleep(0.05)
    finally:
        stop.set()
        writer.join()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "locked" not in err and "Traceback" not in err
    assert errors == []
    assert statuses and set(statuses) <= {0, 2}  # 2: before the job row exists
