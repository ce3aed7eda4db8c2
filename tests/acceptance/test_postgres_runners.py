"""Several runner processes on one job in a real PostgreSQL: each item made once, one shared
rate limit, a dead runner's items finished by the others, planning at once is safe."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import (
    cli,
    cli_process,
    fresh_postgres_database,
    generation_requests,
    items,
    manifest,
    needs_postgres,
    wait_for,
)

pytestmark = needs_postgres


@pytest.fixture
def pg(monkeypatch):
    for url in fresh_postgres_database():
        monkeypatch.setenv("BATCHFUSE_DB", url)
        monkeypatch.setenv("BATCHFUSE_LEASE_S", "3")
        yield url


def query(url: str, sql: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_three_runners_share_one_job_and_one_rate_limit(job, mock, pg):
    mock.configure(latency_ms=20, image_mode="solid", record_bodies=False)
    n, rpm = 300, 600
    job.write(manifest(mock.url, items(n), limits={"concurrency": 6, "requests_per_minute": rpm}))
    # all three start together on an empty database: they migrate and plan at the same time
    procs = [cli_process("run", job.manifest) for _ in range(3)]

    def live_runs() -> int:
        shown = cli("status", job.manifest, "--json")
        assert shown.exit_code == 0, shown.stderr
        return len([r for r in json.loads(shown.stdout)["runs"] if r["live"]])

    # status sees all three while they work
    wait_for(lambda: live_runs() == 3, "status to show three live runs", proc=procs[0])
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e for _, e in outs]

    assert query(pg, "SELECT count(*), count(DISTINCT key) FROM items") == [(n, n)]
    assert query(pg, "SELECT state, count(*) FROM items GROUP BY state") == [("succeeded", n)]
    per_item = query(pg, "SELECT item_id, count(*) FROM attempts WHERE outcome = 'succeeded' GROUP BY item_id")
    assert len(per_item) == n and {c for _, c in per_item} == {1}  # each made exactly once
    assert query(pg, "SELECT count(*) FROM outputs") == [(n,)]
    assert len(generation_requests(mock)) == n
    assert len(list(job.out.glob("*.png"))) == n
    assert all(r[0] > 0 for r in query(pg, "SELECT succeeded FROM runs"))  # all three did work

    times = [r["t"] for r in generation_requests(mock)]
    assert max_in_window(times, 60.0) <= rpm
    # finer than a minute: three runners at full rate would send 30/s; the job's limit is 10/s
    assert max_in_window(times, 10.0) <= rpm / 6 * 1.25


def test_a_killed_runners_items_are_finished_by_the_others_after_its_leases_expire(job, mock, pg):
    mock.configure(image_mode="solid", record_bodies=False)
    mock.faults(hold=True)  # both runners' requests wait at the mock until the victim is dead
    n = 150
    job.write(manifest(mock.url, items(n), limits={"concurrency": 8, "requests_per_minute": None,
                                                   "timeout_s": 300}))
    victim = cli_process("run", job.manifest)
    wait_for(lambda: mock.faults()["held"] == 8, "the victim's 8 requests at the mock", proc=victim)
    held = query(pg, "SELECT count(*) FROM items i JOIN runs r ON r.runner_id = i.lease_owner "
                     f"WHERE i.state = 'running' AND r.pid = {victim.pid}")[0][0]
    survivor = cli_process("run", job.manifest)
    # the survivor shares the job's concurrency with the victim: some of its requests are out too
    wait_for(lambda: mock.faults()["held"] > 8, "the survivor's requests at the mock", proc=survivor)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    mock.faults(hold=False)
    _, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err
    assert held >= 8  # its claimed batch, beyond the 8 in flight
    assert query(pg, "SELECT state, count(*) FROM items GROUP BY state") == [("succeeded", n)]
    per_item = query(pg, "SELECT item_id, count(*) FROM attempts WHERE outcome = 'succeeded' GROUP BY item_id")
    assert {c for _, c in per_item} == {1}
    status = json.loads(cli("status", job.manifest, "--json").stdout)
    dead = [r for r in status["runs"] if r["pid"] == victim.pid]
    assert dead and not dead[0]["live"]


def refused_while_one_runs(job, mock, other_manifest: Callable[[], Path]):
    """Start a runner on ``job`` (concurrency 2) and hold its requests at the mock; run another
    runner from the manifest ``other_manifest()`` sets up meanwhile; stop the first (SIGTERM) and
    check that it ends as stopped.  Returns the other runner's result."""
    mock.faults(hold=True)  # the first runner stays in the middle of its job
    first = cli_process("run", job.manifest)
    wait_for(lambda: mock.faults()["held"] == 2, "the first runner to plan and send", proc=first)
    refused = cli("run", other_manifest())
    first.send_signal(signal.SIGTERM)
    # its held requests are answered only once it is stopping: else their slots send two more
    wait_for(lambda: "run stopping" in first.err(), "the first runner to begin stopping", proc=first)
    mock.faults(hold=False)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 3, err
    return refused


def test_a_runner_with_another_output_folder_is_refused(job, mock, pg, tmp_path_factory):
    mock.configure(image_mode="solid", record_bodies=False)
    job.write(manifest(mock.url, items(40), limits={"concurrency": 2, "requests_per_minute": None,
                                                    "timeout_s": 300}))

    def elsewhere() -> Path:
        root = tmp_path_factory.mktemp("other-machine")
        shutil.copytree(job.root / "images", root / "images")
        shutil.copy(job.manifest, root / "job.yaml")
        return root / "job.yaml"

    refused = refused_while_one_runs(job, mock, elsewhere)
    assert refused.exit_code == 2, refused.stderr
    assert "is not the one the other runners" in refused.stderr and "marker is missing" in refused.stderr


def test_db_upgrade_creates_the_schema(pg):
    result = cli("db", "upgrade", "--db", pg)
    assert result.exit_code == 0 and "upgraded to revision" in result.stdout
    again = cli("db", "upgrade")
    assert "already at revision" in again.stdout
