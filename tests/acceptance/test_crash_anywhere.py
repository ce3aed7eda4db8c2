"""Crash anywhere: SIGKILL at random moments and at chosen fault points; afterwards nothing
recorded is lost, nothing recorded as done was sent again, and no partial file carries a
final name."""

from __future__ import annotations

import hashlib
import random

import pytest

from tests.conftest import cli, cli_process, generation_requests, manifest, stop_time, wait_for
from tests.conftest import items as numbered


def items(n: int) -> list[dict]:
    return numbered(n, prefix="item-")


def check_consistent(job, mock, n: int, max_requests: int) -> None:
    """The promises, checked after the job has finished."""
    keys = [f"item-{i:03d}" for i in range(n)]
    assert job.state_of() == dict.fromkeys(keys, "succeeded")
    outputs = job.sql(
        "SELECT items.key, outputs.path, outputs.sha256 FROM outputs JOIN items ON items.id = outputs.item_id"
    )
    assert sorted(k for k, _, _ in outputs) == keys  # exactly one output each
    for _, path, sha in outputs:
        assert hashlib.sha256((job.out / path).read_bytes()).hexdigest() == sha
    # nothing else in the folder: no temp file, no partial file under a final name
    assert sorted(p.name for p in job.out.rglob("*")) == sorted(f"{k}.png" for k in keys)
    # no request for an item after its success was recorded
    done_at = dict(job.sql(
        "SELECT items.key, min(attempts.ended_at) FROM attempts JOIN items ON items.id = attempts.item_id "
        "WHERE attempts.outcome IN ('succeeded', 'adopted', 'unspooled') GROUP BY items.key"))
    requests = generation_requests(mock)
    for req in requests:
        key = f"item-{int(req['prompt'].split()[1]):03d}"
        assert req["t"] <= done_at[key] + 0.001, f"{key} was sent after it was recorded as done"
    assert len(requests) <= max_requests
    assert job.integrity_ok()


def test_twenty_random_kills_during_a_500_item_job(job, mock):
    # each runner is killed once the mock has answered a random 1-15 more of its requests (with
    # latency, others are in flight and some answers are being written): at most 300 of 500
    mock.configure(latency_ms=30, jitter_ms=20)
    n, concurrency, kills = 500, 8, 0
    job.write(manifest(mock.url, items(n), limits={"concurrency": concurrency}))
    rng = random.Random(20261121)
    while kills < 20:
        proc = cli_process("run", job.manifest)
        target = len(generation_requests(mock)) + rng.randint(1, 15)
        wait_for(lambda: len(generation_requests(mock)) >= target or proc.poll() is not None,  # noqa: B023
                 f"{target} requests at the mock")
        if proc.poll() is not None:
            break
        proc.kill()
        proc.wait(timeout=30)
        kills += 1
    assert kills == 20, f"the job finished before it had been killed 20 times: {proc.err()}"
    final = cli("run", job.manifest)
    assert final.exit_code == 0, final.stderr
    # each kill can lose what the runner had in hand: sent, or answered but not yet written
    check_consistent(job, mock, n, max_requests=n + kills * 2 * concurrency)


@pytest.mark.parametrize(
    "point",
    ["db.record:3:kill", "output.write:4:kill", "output.fsync:2:kill", "output.rename:5:kill"],
)
def test_a_kill_at_a_chosen_moment_loses_nothing(job, mock, point):
    n, concurrency = 30, 4
    mock.configure(latency_ms=20)
    job.write(manifest(mock.url, items(n), limits={"concurrency": concurrency}))
    proc = cli_process("run", job.manifest, env={"BATCHFUSE_FAULTPOINT": point})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -9, err  # it died at the fault point
    rerun = cli("run", job.manifest)
    assert rerun.exit_code == 0, rerun.stderr
    check_consistent(job, mock, n, max_requests=n + 2 * concurrency)
    if point.startswith("db.record"):
        # the group whose commit died had its files in place: adopted, not paid for again
        assert job.sql("SELECT count(*) FROM attempts WHERE outcome = 'adopted'")[0][0] >= 1


@pytest.mark.parametrize(("point", "message"), [
    ("output.write:3:enospc", "No space left on device"),
    ("output.fsync:2:eio", "Input/output error"),
    ("output.rename:2:erofs", "Read-only file system"),
    ("db.record:2:eio", "could not be written"),
])
def test_an_io_error_stops_the_run_cleanly_and_the_next_run_finishes(job, mock, point, message):
    n, concurrency = 30, 4
    job.write(manifest(mock.url, items(n), limits={"concurrency": concurrency}))
    log = job.root / "run.jsonl"
    proc = cli_process("run", job.manifest, "--log-file", log, "--log-format", "json",
                       env={"BATCHFUSE_FAULTPOINT": point})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert message in err and "Traceback" not in err
    # the run stopped instead of failing every item: nothing failed, the rest is pending, and no
    # request left after the stop (how many were done before it depends on the machine's speed)
    assert job.sql("SELECT count(*) FROM items WHERE state = 'failed'") == [(0,)]
    assert job.sql("SELECT count(*) FROM items WHERE state = 'running'") == [(0,)]
    assert job.sql("SELECT count(*) FROM items WHERE state = 'pending'")[0][0] >= 1
    stopped = stop_time(log)
    # by arrival time: a request on the wire at the stop finishes and may be answered after it
    assert [r["received"] for r in generation_requests(mock) if r["received"] > stopped] == [], err
    rerun = cli("run", job.manifest)
    assert rerun.exit_code == 0, rerun.stderr
    # a failed commit loses the completions it held, but their files are in place and
    # carry their spec: the next run adopts them instead of sending them again
    check_consistent(job, mock, n, max_requests=n + 2 * concurrency)
