"""The store on SQLite and PostgreSQL: migrations match the models, and a whole job runs,
resumes and reports the same way on both."""

from __future__ import annotations

import json
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from batchfuse.records import ItemSpec, PlannedRow
from batchfuse.store.engine import SCHEMA_HEAD, create_store_engine, head_revision, upgrade
from batchfuse.store.queries import Store
from batchfuse.store.schema import metadata
from tests.conftest import cli, generation_requests, manifest, wait_for


def test_the_head_constant_is_alembics_head():
    assert head_revision() == SCHEMA_HEAD


def test_migrations_produce_exactly_the_models_schema(db_url):
    engine = create_store_engine(db_url)
    try:
        assert upgrade(engine) is True
        assert upgrade(engine) is False  # already at head: nothing to do
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_a_job_runs_resumes_and_reports_on_each_backend(job, mock, db_url):
    items = [{"id": f"i{i}", "prompt": f"[[mock:503*1]] p{i}" if i % 3 == 0 else f"p{i}"} for i in range(9)]
    items.append({"id": "bad", "prompt": "[[mock:safety*1]] nope"})
    job.write(manifest(mock.url, items))
    first = cli("run", job.manifest, "--db", db_url)
    assert first.exit_code == 1, first.stderr
    status = json.loads(cli("status", job.manifest, "--db", db_url, "--json").stdout)
    assert status["items"]["succeeded"] == 9 and status["items"]["failed"] == 1
    assert status["attempts"] == 13  # 9 + 3 retries + 1 rejected
    assert status["runs"][0]["exit_reason"] == "completed"

    sent = len(generation_requests(mock))
    assert cli("run", job.manifest, "--db", db_url).exit_code == 1
    assert len(generation_requests(mock)) == sent
    assert cli("run", job.manifest, "--db", db_url, "--retry-failed").exit_code == 0
    assert len(generation_requests(mock)) == sent + 1
    assert not job.db.exists()  # the database went where --db said, not beside the manifest


def _store_with_items(url: str, n: int) -> tuple[Store, object]:
    store = Store.open(url)
    job = store.ensure_job("j", "gemini", "m", "/x.yaml")
    store.sync_plan(job, (PlannedRow(f"k{i}", i, f"h{i}", ItemSpec("p", {})) for i in range(n)), 4)
    return store, job


def test_claims_never_overlap_between_concurrent_claimers(db_url):
    store, job = _store_with_items(db_url, 200)
    try:
        claimed: list[list[int]] = [[], [], []]

        def claimer(slot: int) -> None:
            while True:
                batch = store.claim(job, f"runner-{slot}", 7, 60, 4)
                if not batch:
                    return
                claimed[slot].extend(item.id for item in batch)

        threads = [threading.Thread(target=claimer, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        every = [i for ids in claimed for i in ids]
        assert len(every) == 200 and len(set(every)) == 200
    finally:
        store.close()


def test_an_expired_lease_makes_an_item_claimable_again(db_url):
    store, job = _store_with_items(db_url, 3)
    try:
        live = store.claim(job, "live-runner", 1, 60, 4)
        assert len(live) == 1
        first = store.claim(job, "dead-runner", 10, -1, 4)  # a lease that has already run out
        assert len(first) == 2
        again = store.claim(job, "other", 10, 60, 4)  # the live lease stays, the dead ones go
        assert sorted(i.key for i in again) == sorted({"k0", "k1", "k2"} - {live[0].key})
    finally:
        store.close()


def test_sqlite_database_is_in_wal_mode_with_a_busy_timeout(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    store = Store.open(url)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
    finally:
        store.close()
    raw = create_engine(url)
    with raw.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_HEAD
    raw.dispose()


def test_runners_starting_together_get_one_output_folder_token(db_url):
    """Two runners making the job's token at once: the second one's write waits behind the
    first one's open transaction and must then take the token that landed, not its own (else it
    refuses the output folder as 'marker is different')."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serializes writers before they read: the race needs row locks")
    store, job = _store_with_items(db_url, 1)
    first = create_engine(db_url)
    try:
        with first.connect() as conn:
            conn.execute(text("UPDATE jobs SET output_token = 'first-runner' WHERE id = :id"), {"id": job.id})
            got: list[str | None] = []
            second = threading.Thread(target=lambda: got.append(store.output_token(job, create=True)))
            second.start()
            wait_for(
                lambda: conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )).scalar(),
                "the second runner's write to wait for the first one's lock",
            )
            conn.commit()
            second.join(timeout=60)
        assert got == ["first-runner"]
    finally:
        first.dispose()
        store.close()
