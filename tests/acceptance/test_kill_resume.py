"""The runner killed with SIGKILL in the middle of a job, then run again: nothing recorded
is lost, nothing recorded as done is sent again, no partial file carries a final name."""

from __future__ import annotations

import signal

from tests.conftest import cli_process, generation_requests, items, manifest, wait_for

SUCCEEDED = "SELECT count(*) FROM items WHERE state = 'succeeded'"


def test_sigkill_mid_run_then_rerun_completes_without_resending_done_items(job, mock):
    mock.configure(latency_ms=20, jitter_ms=10)
    mock.faults(hold_after=24)  # the first 24 requests are answered, the rest wait at the mock
    n = 60
    job.write(manifest(mock.url, items(n, prefix="item-"), limits={"concurrency": 8, "timeout_s": 300}))
    proc = cli_process("run", job.manifest)
    wait_for(lambda: job.scalar(SUCCEEDED) >= 15, "15 items recorded as succeeded", proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    mock.faults(hold=False)
    done_at_kill = job.scalar(SUCCEEDED)
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
    assert job.integrity_ok()
