"""Review edges in the store and the plan: the versions folder is reserved in output names, a
new-seed reject changes the request's seed even when the item has none, and two reviewers judging
one item at once both land (the ``reviews`` row is an upsert, the item locked to commit)."""

from __future__ import annotations

import json
import threading

from sqlalchemy import event

from batchfuse.review.reading import reading_job
from batchfuse.store.verdicts import SEED_RANGE, record_verdict
from tests.conftest import cli, generation_requests, items, manifest, wait_for


def test_an_output_name_in_the_versions_folder_is_refused_at_plan_time(job, mock):
    data = manifest(mock.url, [{"id": "a", "prompt": "p", "folder": ".batchfuse-versions"},
                                  {"id": "b", "prompt": "p", "folder": "fine"}])
    data["output"]["filename"] = "{folder}/{item}.png"
    job.write(data)
    result = cli("run", job.manifest)
    assert result.exit_code == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if ".batchfuse-versions" in line]
    assert len(lines) == 1 and "reserved folder .batchfuse-versions" in lines[0] and "item a: output.filename" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert generation_requests(mock) == []


def _spec_params(job, key: str) -> dict:
    (spec,) = job.sql(f"SELECT spec FROM items WHERE key = '{key}'")[0]
    return json.loads(spec)["params"]


def test_a_new_seed_reject_puts_a_salted_seed_into_the_request_spec_without_a_seed_of_its_own(job, mock):
    job.write(manifest(mock.url, items(2)))
    assert cli("run", job.manifest).exit_code == 0
    assert "seed" not in _spec_params(job, "i000")
    with reading_job(job.manifest, None, writable=True) as (_, store, j):
        review = record_verdict(store, j, "i000", "reject", reviewer="t", new_seed=True)
    salt = review["seed_salt"]
    assert 0 < salt < SEED_RANGE
    assert cli("run", job.manifest).exit_code == 0
    assert len(generation_requests(mock)) == 3  # the rejected item, once more
    assert _spec_params(job, "i000")["seed"] == salt  # sent as generationConfig.seed where the provider has seeds
    assert "seed" not in _spec_params(job, "i001")


def test_two_reviewers_judging_one_item_at_once_both_land(job, mock, backend):
    """Reviewer A's transaction is held after its verdict row until B is seen waiting (PostgreSQL:
    in pg_stat_activity; SQLite: B has reached its write), then both must be recorded and folded."""
    job.write(manifest(mock.url, items(1)))
    assert cli("run", job.manifest).exit_code == 0
    a_wrote, b_started, b_done, release = (threading.Event() for _ in range(4))
    errors: list[BaseException] = []

    def reviewer(name: str, extra: str, hold: bool) -> None:
        try:
            with reading_job(job.manifest, None, writable=True) as (_, store, j):
                if hold:
                    @event.listens_for(store.engine, "after_cursor_execute")
                    def _held(conn, cursor, statement, *_args):  # noqa: ANN001
                        if statement.lstrip().upper().startswith("INSERT INTO VERDICTS"):
                            a_wrote.set()
                            assert release.wait(60), "never released"
                else:
                    assert a_wrote.wait(60)
                    b_started.set()
                record_verdict(store, j, "i000", "reject", reviewer=name, prompt_extra=extra)
                if not hold:
                    b_done.set()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    a = threading.Thread(target=reviewer, args=("alice", "line from alice", True))
    b = threading.Thread(target=reviewer, args=("bob", "line from bob", False))
    a.start()
    b.start()
    try:
        wait_for(lambda: b_started.is_set(), "reviewer B to start")
        if backend == "postgres":
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            # B queues behind A (or, without the item lock, writes first and A's insert collides)
            wait_for(lambda: b_done.is_set() or job.scalar(waiting) >= 1, "reviewer B waiting on A's lock")
    finally:
        release.set()
        a.join(60)
        b.join(60)
    assert errors == []
    assert job.sql("SELECT reviewer FROM verdicts ORDER BY id") == [("alice",), ("bob",)]
    assert job.sql("SELECT verdict, revision, prompt_extra FROM reviews") == [
        ("reject", 2, "line from alice\nline from bob")
    ]
    assert cli("run", job.manifest).exit_code == 0
    assert [r["prompt"] for r in generation_requests(mock)[1:]] == ["prompt 0\n\nline from alice\nline from bob"]

