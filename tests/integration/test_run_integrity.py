"""Run integrity: a refused run changes nothing, a result counts only for the spec it was made
from, a paid result that cannot be written is spooled and written later without paying again,
an unexpected exception never ends in "completed", and ``--only`` names items the job has."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from batchfuse.outputs.png import read_png_text
from batchfuse.plan.preview import load
from batchfuse.store.queries import Store
from tests.conftest import cli, cli_process, generation_requests, manifest, wait_for

#: Columns a live runner's heartbeat rewrites while it waits on the API.
VOLATILE = {("runs", "heartbeat_at"), ("items", "lease_expires_at")}



def snapshot(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table (but the heartbeat's columns), in a stable order."""
    engine = create_engine(url)
    try:
        tables = sorted(inspect(engine).get_table_names())
        with engine.connect() as conn:
            return {
                t: [
                    {k: v for k, v in row.items() if (t, k) not in VOLATILE}
                    for row in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1")).mappings()
                ]
                for t in tables
            }
    finally:
        engine.dispose()


def states(job) -> dict[str, str]:
    try:
        return job.state_of()
    except Exception:  # not created yet
        return {}


def prompts_on_disk(job, keys: list[str]) -> dict[str, str]:
    return {k: read_png_text(job.out / f"{k}.png").get("prompt", "") for k in keys}


def two_items(mock_url: str, word: str, **limits: Any) -> dict[str, Any]:
    items = [{"id": k, "prompt": f"{word} prompt for {k}"} for k in ("a", "b")]
    return manifest(mock_url, items, limits={"concurrency": 2, "timeout_s": 30, **limits})


def test_a_refused_run_changes_nothing_and_the_live_run_keeps_its_spec(job, mock, backend):
    if backend != "sqlite":
        pytest.skip("the one-runner lock is SQLite's; PostgreSQL runners share a job")
    mock.faults(hold=True)  # the first run's requests wait at the mock until the test is done
    job.write(two_items(mock.url, "old"))
    first = cli_process("run", job.manifest)
    try:
        wait_for(lambda: mock.faults()["held"] == 2 and states(job) == {"a": "running", "b": "running"},
                 "both requests of the first run in flight", proc=first)
        before = snapshot(job.url)
        job.write(two_items(mock.url, "new"))  # the prompt is edited while the first run is live
        refused = cli("run", job.manifest)
        assert refused.exit_code == 2, refused.stderr  # the job is locked: the caller's mistake
        assert f"being run by process {first.pid}" in refused.stderr
        assert snapshot(job.url) == before  # refused: not re-planned, nothing written
    finally:
        mock.faults(hold=False)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert prompts_on_disk(job, ["a", "b"]) == {"a": "old prompt for a", "b": "old prompt for b"}
    rerun = cli("run", job.manifest)
    assert rerun.exit_code == 0, rerun.stderr
    assert "2 changed" in rerun.stderr
    assert prompts_on_disk(job, ["a", "b"]) == {"a": "new prompt for a", "b": "new prompt for b"}
    assert len(generation_requests(mock)) == 4


def test_a_result_counts_only_for_the_spec_it_was_made_from(job, mock):
    mock.faults(hold=True)  # the old prompt's requests wait at the mock while the plan changes
    job.write(two_items(mock.url, "old"))
    runner = cli_process("run", job.manifest)
    try:
        wait_for(lambda: mock.faults()["held"] == 2 and states(job) == {"a": "running", "b": "running"},
                 "both old requests in flight", proc=runner)
        # re-planned while the old requests are in flight, as another runner sharing the job does
        job.write(two_items(mock.url, "new"))
        loaded = load(job.manifest)
        store = Store.open(job.url)
        try:
            summary = store.sync_plan(store.find_job("test-job"), loaded.planner.rows([]), 4)
        finally:
            store.close()
        assert summary.changed == 2
    finally:
        mock.faults(hold=False)  # the old results come back now, after the re-plan
        _, err = runner.communicate(timeout=60)
    assert runner.returncode == 0, err
    assert states(job) == {"a": "succeeded", "b": "succeeded"}
    stale = job.sql(
        "SELECT i.key FROM attempts t JOIN items i ON i.id = t.item_id "
        "WHERE t.outcome = 'succeeded' AND t.spec_hash <> i.spec_hash"
    )
    assert stale == []  # no item is done on the strength of the old prompt's result
    assert job.sql("SELECT count(*) FROM attempts WHERE outcome = 'superseded'") == [(2,)]
    assert prompts_on_disk(job, ["a", "b"]) == {"a": "new prompt for a", "b": "new prompt for b"}
    assert job.sql("SELECT count(*) FROM outputs o JOIN attempts t ON t.id = o.attempt_id "
                   "JOIN items i ON i.id = o.item_id WHERE t.spec_hash <> i.spec_hash") == [(0,)]


def test_a_result_that_cannot_be_written_is_spooled_and_written_later_without_paying(job, mock):
    items = [{"id": f"s{i}", "prompt": f"spool prompt {i}"} for i in range(3)]
    job.write(manifest(mock.url, items, limits={"concurrency": 1, "max_attempts": 2}))
    full = {"BATCHFUSE_FAULTPOINT": "output.write:1:enospc"}  # the first output written fails

    first = cli_process("run", job.manifest, env=full)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 3, err
    lines = [line for line in err.splitlines() if "cannot write outputs" in line]
    assert lines and str(job.out) in lines[0] and "No space left on device" in lines[0], err
    assert "Traceback" not in err
    (key,) = job.sql("SELECT i.key FROM spool s JOIN items i ON i.id = s.item_id")[0]
    prompt = f"spool prompt {key[1:]}"

    def paid() -> int:
        return sum(1 for r in generation_requests(mock) if r["prompt"] == prompt)

    assert paid() == 1
    assert job.sql(f"SELECT state, attempts FROM items WHERE key = '{key}'") == [("pending", 1)]  # noqa: S608

    # the folder is still broken the next night: one clear stop, nothing paid again; the
    # output failure counts, so the item cannot loop forever
    again = cli_process("run", job.manifest, "--only", key, env=full)
    _, err = again.communicate(timeout=60)
    assert again.returncode == 3, err
    assert "cannot write outputs" in err and "Traceback" not in err
    assert paid() == 1
    assert job.sql(f"SELECT state, attempts FROM items WHERE key = '{key}'") == [("failed", 2)]  # noqa: S608
    (last_error,) = job.sql(f"SELECT last_error FROM items WHERE key = '{key}'")[0]  # noqa: S608
    assert str(job.out) in last_error and "--retry-failed" in last_error

    fixed = cli("run", job.manifest, "--retry-failed")
    assert fixed.exit_code == 0, fixed.stderr
    assert paid() == 1  # written from the spool: never paid twice
    assert read_png_text(job.out / f"{key}.png").get("prompt") == prompt
    assert job.state_of() == {"s0": "succeeded", "s1": "succeeded", "s2": "succeeded"}
    assert job.sql("SELECT count(*) FROM spool") == [(0,)]
    assert job.sql("SELECT count(*) FROM outputs") == [(3,)]
    assert len(generation_requests(mock)) == 3


def test_an_unexpected_exception_in_an_item_stops_the_run_with_exit_4(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}],
                       limits={"concurrency": 1}))
    proc = cli_process("run", job.manifest, env={"BATCHFUSE_FAULTPOINT": "item.attempt:1:boom"})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    assert "internal error" in err and "Traceback" not in err and "never retrieved" not in err, err
    assert "completed" not in err
    assert set(job.state_of().values()) <= {"pending", "succeeded"}
    assert job.state_of()["a"] == "pending"
    rerun = cli("run", job.manifest)
    assert rerun.exit_code == 0, rerun.stderr


def test_only_naming_no_item_of_the_job_exits_2_and_names_the_keys(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "x"}]))
    result = cli("run", job.manifest, "--only", "A", "--only", "a", "--only", "zz")
    assert result.exit_code == 2
    assert "'A'" in result.stderr and "'zz'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert generation_requests(mock) == []
    assert not job.db.exists()
