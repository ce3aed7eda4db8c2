"""The runner killed with SIGKILL in the middle of a job, then run again: nothing recorded
is lost, nothing recorded as done is sent again, no partial file carries a final name."""

from __future__ import annotations

import signal
import sqlite3
import time

from tests.conftest import cli_process, generation_requests, manifest


def succeeded(db) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM items WHERE state = 'succeeded'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_sigkill_mid_run_then_rerun_completes_without_resending_done_items(job, mock):
    mock.configure(latency_ms=80, jitter_ms=40)
    n = 60
    job.write(manifest(mock.url, [{"id": f"item-{i:03d}", "prompt": f"prompt {i}"} for i in range(n)],
                       limits={"concurrency": 8}))
    proc = cli_process("run", job.manifest)
    deadline = time.monotonic() + 30
    while succeeded(job.db) < 15 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    done_at_kill = succeeded(job.db)
    assert 15 <= done_at_kill < n

    rerun = cli_process("run", job.manifest)
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err

    # every item succeeded with exactly one output, on disk, and nothing else is in the folder
    assert set(job.state_of().values()) == {"succeeded"}
    outputs = job.sql("SELECT items.key, outputs.path FROM outputs JOIN items ON items.id = outputs.item_id")
    assert sorted(k for k, _ in outputs) == sorted(f"item-{i:03d}" for i in range(n))
    assert sorted(p.name for p in job.out.iterdir()) == sorted(f"item-{i:03d}.png" for i in range(n))

    # no request for an item after its success was recorded
    success_time = dict(
        job.sql(
            "SELECT items.key, min(attempts.ended_at) FROM attempts JOIN items ON items.id = attempts.item_id "
            "WHERE attempts.outcome IN ('succeeded', 'adopted') GROUP BY items.key"
        )
    )
    for req in generation_requests(mock):
        key = f"item-{int(req['prompt'].split()[1]):03d}"
        assert req["t"] <= success_time[key] + 0.001, f"{key} was sent again after it was recorded as done"

    # requests: at most one per item plus what was in hand at the kill (sent, or answered but
    # not yet written: twice the concurrency)
    assert len(generation_requests(mock)) <= n + 16
    with sqlite3.connect(job.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
