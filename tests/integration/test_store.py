"""The store on SQLite and PostgreSQL: migrations match the models, and a whole job runs,
resumes and reports the same way on both."""

from __future__ import annotations

import json
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from batchfuse.records import ItemSpec, PlannedRow
from batchfuse.store.engine import SCHEMA_HEAD, create_store_engine, head_revision, upgrade
from batchfuse.store.queries import Store
from batchfuse.store.schema import metadata
from tests.conftest import cli, fresh_postgres_database, generation_requests, manifest, wait_for


def test_the_head_constant_is_alembics_head():
    assert head_revision() == SCHEMA_HEAD


def schema_of(conn) -> dict:
    """Every table's columns, primary key, indexes, unique constraints and foreign keys, as reflected."""
    seen = inspect(conn)
    return {
        table: {
            # by name: a migration adds a column at the end, the models may list it anywhere
            "columns": sorted((c["name"], str(c["type"]), c["nullable"]) for c in seen.get_columns(table)),
            "primary key": seen.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in seen.get_indexes(table)),
            "unique": sorted(tuple(u["column_names"]) for u in seen.get_unique_constraints(table)),
            "foreign keys": sorted((tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                                   for f in seen.get_foreign_keys(table)),
        }
        for table in sorted(seen.get_table_names())
    }


def test_migrations_produce_exactly_the_models_schema(db_url, tmp_path):
    """Every migration in turn (Alembic) and an empty database made from the models at once
    (what a new job gets) end with the same schema, the models' own, stamped with the head."""
    second = None if db_url.startswith("sqlite") else fresh_postgres_database()
    migrated = create_store_engine(db_url)
    direct = create_store_engine(f"sqlite:///{tmp_path / 'direct.db'}" if second is None else next(second))
    try:
        assert upgrade(migrated, from_models=False) is True
        assert upgrade(direct) is True
        schemas = []
        for engine in (migrated, direct):
            assert upgrade(engine) is False  # already at head: nothing to do
            with engine.connect() as conn:
                assert compare_metadata(MigrationContext.configure(conn), metadata) == []
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_HEAD
                schemas.append(schema_of(conn))
        assert schemas[0] == schemas[1]
        assert "items" in schemas[0] and "alembic_version" in schemas[0]
    finally:
        migrated.dispose()
        direct.dispose()
        if second is not None:
            second.close()  # drops the second database


def test_an_empty_database_made_at_once_takes_the_migrations_after_it(tmp_path):
    """A database made from the models is an ordinary one to Alembic: stamped with the head, so a
    later batchfuse's migrations apply on top (here: it is taken back one step and brought up again)."""
    from alembic import command

    from batchfuse.store.engine import alembic_config

    engine = create_store_engine(f"sqlite:///{tmp_path / 'made.db'}")
    try:
        assert upgrade(engine) is True
        command.downgrade(alembic_config(engine), "-1")
        assert upgrade(engine) is True
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_HEAD
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
