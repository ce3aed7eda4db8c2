"""Opening a job's database for reading (status, report, export): never created, never migrated."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchfuse.errors import EmptyDatabase, InputError
from batchfuse.plan.manifest import Manifest, load_manifest
from batchfuse.records import Job
from batchfuse.store.engine import missing_sqlite_file, resolve_db_url
from batchfuse.store.queries import Store


@contextlib.contextmanager
def reading_job(
    path: Path, db: str | None = None, *, writable: bool = False
) -> Iterator[tuple[Manifest, Store, Job]]:
    """The manifest's job opened for reading; InputError if it has never been run.

    A missing SQLite file is reported rather than opened (opening would create an empty
    database just to say there is nothing in it), and readers never migrate.  The review
    (``writable``) records verdicts: it opens the database for writing and brings its schema up
    to date, but still never creates a database or a job.
    """
    manifest = load_manifest(path)
    url = resolve_db_url(db, path)
    not_run = f"{path}: job {manifest.job!r} has not been run yet"
    missing = missing_sqlite_file(url)
    if missing is not None:
        raise InputError(f"{not_run} (no database at {missing})")
    try:
        store = Store.open(url, migrate=writable)
    except EmptyDatabase:
        raise InputError(f"{not_run} (no such job in the database)") from None
    try:
        job = store.find_job(manifest.job)
        if job is None:
            raise InputError(f"{not_run} (no such job in the database)")
        yield manifest, store, job
    finally:
        store.close()


def job_status(path: Path, db: str | None = None) -> dict[str, Any]:
    """The job's state as ``batchfuse status --json`` prints it."""
    with reading_job(path, db) as (manifest, store, job):
        info = store.status(job)
        info["batches"] = batch_status(store, job, manifest.batch.stale_after_h)
        return info


def batch_status(store: Store, job: Job, stale_after_h: float) -> list[dict[str, Any]]:
    """The job's batches (batch mode), newest first: state, counts, submitted at, age, stale, items."""
    from batchfuse.store.batches import BatchQueries

    now = time.time()
    rows = BatchQueries(store).summary(job)
    for b in rows:
        since = b["submitted_at"] or b["created_at"]
        b["age_s"] = round((b["ended_at"] or now) - since, 1)
        b["stale"] = b["state"] in ("preparing", "pending", "running") and now - since > stale_after_h * 3600
    return rows
